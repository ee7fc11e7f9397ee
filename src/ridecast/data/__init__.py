"""The data layer: TLC trip data in, one canonical frame out.

- ``schema``: taxi types, months, TLC file names and the published parquet schemas;
- ``zones``: the TLC taxi zone lookup table;
- ``readers``: parquet files, folders, globs and SQL tables -> the canonical trip frame;
- ``synth``: realistic synthetic months with the exact TLC schemas.

Import from the submodules; this package imports nothing heavy by itself.
"""
