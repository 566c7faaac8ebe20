"""A tiny run of the many-servers benchmark: real servers sharing a real redis-server."""

from __future__ import annotations

import json

from bench import servers


def test_two_balanced_servers_answer_every_call(tmp_path, capsys):
    results = servers.run([2], concurrency=2, requests=4, steps=2, size=64, out=tmp_path)

    assert results["servers=2"]["statuses"] == {"OK": 4}
    assert "servers=2" in capsys.readouterr().out
    saved = json.loads((tmp_path / "servers.json").read_text())
    assert saved["settings"]["servers"] == [2]
