from wakeword_dist.bench.loader import bench_loader


def test_bench_loader_runs_all_formats(tmp_path, capsys):
    res = bench_loader(tmp_path, n_clips=256, batch_size=32, num_workers=1, repeats=1)
    assert set(res) == {"flac", "wav", "npy"}
    for r in res.values():
        assert r["clips_per_s"] > 0 and r["clips_per_worker_cpu_s"] > 0
        assert r["in_process_clips_per_s"] > 0
    assert res["flac"]["bytes_per_clip"] < res["wav"]["bytes_per_clip"]
    assert all(r["baseline_clips_per_s_per_worker"] > 0 and r["baseline_fast_clips_per_s_per_worker"] > 0
               for r in res.values())  # the plain-webdataset pipelines side by side
    assert "clips/s/worker" in capsys.readouterr().out
