"""Built-in target plugin: OpenVINO on Intel (and other x86) CPUs."""
