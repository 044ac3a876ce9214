"""The benchmark harness: ``edgesplit bench NAME --out DIR``, one module per benchmark, results under ``results/``.

Each benchmark is its own subcommand with only its own options (:mod:`benchmarks.cli`). The harness uses the
offline toolchain (:mod:`split`), the edge and the cloud; nothing in those imports it.
"""
