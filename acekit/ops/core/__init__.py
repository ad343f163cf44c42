"""The ops the kernel ships, one :class:`~acekit.ops.OpDef` each, grouped by kind.

Op names follow PyTorch's functional names so that parsers map onto them directly.
Conventions every op here follows (docs/ir-ops.md explains them with examples):

- Inputs are IR values: tensors, or scalar/shape values (python ints, bools and int
  tuples at run time, typed ``i64[]`` / ``i64[n]`` / ``bool[]``). Python constants go in
  attributes, or in ``constant`` nodes (attr ``value``) where an op reads them as inputs.
- An int-list parameter (``reshape``'s shape, ``expand``'s size, ...) is an attribute
  when every entry is known at parse time; when some entries are computed in the graph
  (``x.shape[0]``) it is an extra trailing input, a ``pack`` value, instead.
- A missing optional input in the *middle* of an op's inputs is a ``constant`` node with
  ``value=None``; trailing optional inputs are simply left out.
- ``training`` attributes: absent/``None`` means "follow the module's train()/eval()
  mode at run time"; an explicit bool is fixed.
"""

from __future__ import annotations

from acekit.ops.core import (
    activations,
    attention,
    elementwise,
    linalg,
    norms,
    pooling,
    reductions,
    scalar,
    shapes,
    structure,
)
from acekit.ops.opdef import OpDef

_GROUPS = (
    structure,
    scalar,
    elementwise,
    activations,
    linalg,
    norms,
    reductions,
    pooling,
    shapes,
    attention,
)


def core_definitions() -> list[OpDef]:
    """Every core op's definition, in the order of the groups above."""
    return [opdef for group in _GROUPS for opdef in group.DEFINITIONS]
