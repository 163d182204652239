"""What people run (benchmarks, draft evaluation, the demo): imported by nothing in the library.
Each module is a command: `python -m spectr_lib.tools.<name> --help`."""
