"""Multi-rank evaluation of a split: each rank scores its share, rank 0 builds the report.

Clips: the eval loader gives every sample to exactly one rank; results are gathered and
de-duplicated by key. Streams: stream i goes to rank i % world_size. The `stream` split is
shared by val and test: streams sorted by key, the first half is val's, the second test's,
so the threshold chosen on val is never tuned on the audio it is reported on. A split of
another dataset (``evaluate`` with ``eval.test_root``) or of a held-out engine (leave one engine
out) scores all of its streams (``stream_half="all"``): none of them chose θ.

Source filters (``sources``, reader kwargs on the json ``source`` field) apply to clips and
streams alike, so under leave-one-engine-out neither val's clips nor its streams (θ) hold the
held-out engine. ``per_engine=True`` adds ``report["per_engine"]``: the same metrics at the same
θ for each source's clips and streams.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate.utils import gather_object

from wakeword_dist.config import Config
from wakeword_dist.data import reader
from wakeword_dist.eval.report import build_report, dedup_by_key, score_clips, score_streams

SUMMARY_KEYS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "frr_at_target", "det_frr_at_target",
                "fa_per_hour", "hard_negative_far", "threshold", "clip_auc", "clip_eer", "det_eer", "n_clips",
                "stream_hours")


def summary_of(report: dict) -> dict:
    """The report's headline figures as floats; figures it could not compute (None) are left out."""
    return {k: float(report[k]) for k in SUMMARY_KEYS if k in report and report[k] is not None}


PER_ENGINE_KEYS = ("clip_auc", "frr_at_target", "det_frr_at_target", "fa_per_hour", "stream_hours", "accuracy",
                   "f1_macro", "n_clips")


def stream_keys_for(half: str, stream_dir) -> list[str]:
    """The streams of ``half``: "val" (first half by key), "test" (second half) or "all"."""
    keys = sorted(reader.split_keys(stream_dir))  # member names only: no audio decoded
    if half == "all":
        return keys
    cut = (len(keys) + 1) // 2
    return keys[:cut] if half == "val" else keys[cut:]


def score_split(acc, model, data, cfg: Config, *, split: str, with_streams: bool = True,
                sources: dict | None = None, stream_half: str | None = None):
    """Collective. Returns on rank 0 (None elsewhere): (clip keys, probs (N, C), labels (N,),
    stream scores [(T_i,)], stream durations [s], stream keys), de-duplicated by key.

    ``sources``: filter of clips and streams as reader kwargs (``{"include_sources": [...]}``);
    default: the config's ``data.include/exclude_sources`` for val, none for test.
    ``stream_half``: which streams ("val", "test", "all"); default: the split's own half."""
    from wakeword_dist.train.data_setup import eval_loader

    split_dir = {"val": data.val_dir, "test": data.test_dir}[split]
    if sources is None:
        sources = data.sources if split == "val" else {}
    device = acc.device
    net = acc.unwrap_model(model)
    loader = eval_loader(cfg, data, split_dir, batch_size=cfg.eval.batch_size, rank=acc.process_index,
                         world_size=acc.num_processes, sources=sources)
    with acc.autocast():
        keys, probs, labels = score_clips(net, loader, device=device)
    s_keys, s_scores, s_dur = [], [], []
    if with_streams and reader.split_exists(data.stream_dir):
        wanted = stream_keys_for(stream_half or split, data.stream_dir)
        mine = set(wanted[acc.process_index::acc.num_processes])
        items = reader.iter_stream(data.stream_dir, keys=mine, **sources)  # only this rank's streams
        s_keys, s_scores, s_dur = score_streams(
            net, items, positive_index=data.positive_index, sample_rate=cfg.data.sample_rate,
            window_s=cfg.eval.window_s, hop_s=cfg.eval.hop_s, device=device,
            batch_size=cfg.eval.batch_size, progress=False)
    gathered = gather_object([(keys, probs, labels, s_keys, s_scores, s_dur)]) if acc.num_processes > 1 \
        else [(keys, probs, labels, s_keys, s_scores, s_dur)]
    if not acc.is_main_process:
        return None
    all_keys = [k for g in gathered for k in g[0]]
    all_probs = np.concatenate([g[1] for g in gathered if len(g[1])]) if all_keys else np.zeros((0, len(data.label_names)))
    all_labels = np.concatenate([g[2] for g in gathered if len(g[2])]) if all_keys else np.zeros(0, dtype=np.int64)
    all_keys, all_probs, all_labels = dedup_by_key(all_keys, all_probs, all_labels)
    streams = sorted((k, s, d) for g in gathered for k, s, d in zip(g[3], g[4], g[5]))
    return all_keys, all_probs, all_labels, [s for _, s, _ in streams], [d for _, _, d in streams], \
        [k for k, _, _ in streams]


def validate(acc, model, data, cfg: Config, *, split: str = "val", job: str = "distill",
             threshold: float | None = None, sources: dict | None = None,
             stream_half: str | None = None, per_engine: bool = False) -> dict:
    """Collective. On rank 0 returns {"report": full report, "summary": scalar metrics}; else {}.
    ``sources``, ``stream_half``: as for ``score_split``. ``per_engine``: add
    ``report["per_engine"]`` ({source: PER_ENGINE_KEYS at the report's θ})."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scored = score_split(acc, model, data, cfg, split=split, with_streams=job != "teacher",
                                 sources=sources, stream_half=stream_half)
    finally:
        model.train(was_training)
    if scored is None:
        return {"summary": {}}
    keys, probs, labels, s_scores, s_dur, s_keys = scored
    report = _report(cfg, data, probs, labels, s_scores, s_dur, s_keys, threshold)
    report["n_unique_keys"] = len(keys)
    # each split's json members read once (one pass over its tars) for all that follows
    clip_meta = reader.split_json({"val": data.val_dir, "test": data.test_dir}[split])
    stream_meta = reader.split_json(data.stream_dir) if s_keys else {}
    report.update(hard_negative_accepts(keys, probs, labels, clip_meta, data.positive_index, report["threshold"]))
    if s_keys:
        report["false_accepts"] = false_accepts_heard(
            report, {k: m.get("segments") for k, m in stream_meta.items()}, cfg.eval.window_s)
    if per_engine:
        report["per_engine"] = _per_engine(cfg, data, clip_meta, stream_meta, report["threshold"], keys, probs,
                                           labels, s_scores, s_dur, s_keys)
    return {"report": report, "summary": summary_of(report)}


def hard_negative_accepts(keys, probs, labels, meta_of: dict, positive_index: int, threshold: float) -> dict:
    """Near misses judged at θ: the share of hard-negative clips (json ``hard_negative``: curated
    confusables, the phrase cut short, fragments around it) the detector accepts,
    ``hard_negative_far``, and the same per clip ``kind``. ``meta_of``: {key: clip json}. NaN / {}
    where the split marks no hard negatives. Rank 0 only."""
    meta = [meta_of.get(k, {}) for k in keys]
    hard = np.array([bool(m.get("hard_negative")) for m in meta], dtype=bool) \
        & (np.asarray(labels) != positive_index) & (np.asarray(labels) >= 0)
    accepted = np.asarray(probs)[:, positive_index] >= threshold if len(keys) else np.zeros(0, bool)
    kinds = np.array([str(m.get("kind")) for m in meta])
    by_kind = {str(k): float(accepted[hard & (kinds == k)].mean()) for k in sorted(set(kinds[hard]))}
    return {"hard_negative_far": float(accepted[hard].mean()) if hard.any() else float("nan"),
            "hard_negative_far_by_kind": by_kind, "n_hard_negative_clips": int(hard.sum())}


def false_accepts_heard(report: dict, segments_of: dict, window_s: float, most: int = 50) -> dict:
    """What each false accept at the report's θ heard: the utterances (``[start, end, kind, text]``
    in the stream json's ``segments``, written by synth) that overlap its window. ``by_kind``
    counts them by the kind of the utterance most of the window held (``"none"``: noise only;
    ``"unknown"``: the stream records no segments). Rank 0 only."""
    by_kind: dict[str, int] = {}
    listed = []
    for key, times in report["activations"].items():
        segments = segments_of.get(key)
        for end in times:
            start = end - window_s  # activation times are window ends
            heard = [] if segments is None else [s for s in segments if s[0] < end and s[1] > start]
            overlap = {}
            for s in heard:
                overlap[s[2]] = overlap.get(s[2], 0.0) + min(end, s[1]) - max(start, s[0])
            kind = "unknown" if segments is None else max(overlap, key=overlap.get) if overlap else "none"
            by_kind[kind] = by_kind.get(kind, 0) + 1
            if len(listed) < most:
                listed.append({"stream": key, "time_s": round(end, 2), "kind": kind,
                               "heard": [s[3] for s in heard]})
    return {"by_kind": dict(sorted(by_kind.items())), "first": listed}


def _report(cfg: Config, data, probs, labels, s_scores, s_dur, s_keys, threshold) -> dict:
    return build_report(
        probs, labels, s_scores, s_dur, positive_index=data.positive_index, label_names=data.label_names,
        hop_s=cfg.eval.hop_s, window_s=cfg.eval.window_s, smoothing_frames=cfg.eval.smoothing_frames,
        lockout_s=cfg.eval.lockout_s, target_fa_per_hour=cfg.eval.target_fa_per_hour, threshold=threshold,
        stream_keys=s_keys)


def _per_engine(cfg: Config, data, clip_meta: dict, stream_meta: dict, threshold: float, keys, probs, labels,
                s_scores, s_dur, s_keys) -> dict:
    """The split's metrics at ``threshold`` for each source (engine) of its clips: its own clips,
    and the streams of the same source (FA/h NaN where it has none). ``clip_meta`` /
    ``stream_meta``: {key: json} of the split and of the streams. Rank 0 only."""
    clip_of = np.array([str(clip_meta.get(k, {}).get("source", "")) for k in keys])
    stream_of = [str(stream_meta.get(k, {}).get("source", "")) for k in s_keys]
    out = {}
    for source in sorted(set(clip_of)):
        sel = clip_of == source
        mine = [i for i, s in enumerate(stream_of) if s == source]
        sub = _report(cfg, data, probs[sel], labels[sel], [s_scores[i] for i in mine], [s_dur[i] for i in mine],
                      [s_keys[i] for i in mine], threshold)
        out[source or "<none>"] = {k: sub.get(k) for k in PER_ENGINE_KEYS}
    return out
