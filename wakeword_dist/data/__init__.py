"""Data: shard format, dataset builders and loaders (format documented in shards/README.md).

Entry points (plain functions with explicit arguments; import from the submodule):

- ``synth.synthesize(out_root, ...)`` / ``synth.make_tiny_dataset(out_root, seed)``: espeak-ng data.
- ``build_shards.build_shards(src_dir, out_root, ...)``: real recordings (folder / Speech Commands).
- ``shard_writer.ShardWriter``: write one split (tars + ``index.json``).
- ``reader.make_train_loader`` / ``reader.make_eval_loader``: per-rank loaders;
  ``reader.iter_stream``, ``reader.load_background``, ``reader.read_index``,
  ``reader.check_sample_rate``, ``reader.iter_split``.
- ``inspect_shards.inspect_shards(root)`` / ``print_inspection``: statistics + integrity check.

Nothing is imported here so that ``import wakeword_dist.data.audio_io`` stays cheap.
"""
