import sys
from pathlib import Path
from benchmarks.ptq import make_case
from benchmarks.targets import quantize_nncf
case = make_case(sys.argv[1])
quantize_nncf(case, Path(sys.argv[2]), Path(sys.argv[3]))
print("done")
