"""report["false_accepts"]: what each false accept heard, from the stream json's segments."""

from wakeword_dist.train.validate import false_accepts_heard


def test_each_false_accept_names_the_utterance_most_of_its_window_held():
    segments = {"s0": [[1.0, 2.0, "confusable", "say nova"], [2.2, 4.0, "speech", "what time is it"]],
                "s1": [[0.5, 1.0, "speech", "stop"]]}
    report = {"activations": {"s0": [2.1, 3.9, 9.0], "s1": [0.8], "s2": [5.0]}}
    out = false_accepts_heard(report, {**segments, "s2": None}, window_s=1.0)
    first = {(f["stream"], f["time_s"]): f for f in out["first"]}
    assert first["s0", 2.1]["kind"] == "confusable"  # window 1.1-2.1 s: 0.9 s of "say nova"
    assert first["s0", 2.1]["heard"] == ["say nova"]
    assert first["s0", 3.9]["kind"] == "speech" and first["s0", 3.9]["heard"] == ["what time is it"]
    assert first["s0", 9.0]["kind"] == "none" and first["s0", 9.0]["heard"] == []  # noise only
    assert first["s1", 0.8]["kind"] == "speech"  # window starts before the stream: clipped at 0
    assert first["s2", 5.0]["kind"] == "unknown"  # a stream without segments (build-shards data)
    assert out["by_kind"] == {"confusable": 1, "none": 1, "speech": 2, "unknown": 1}
    assert len(false_accepts_heard(report, segments, 1.0, most=2)["first"]) == 2
