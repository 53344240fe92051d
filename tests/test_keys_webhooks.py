"""An API key's webhook fields (thumbify/keys.py): stored only when set, so keys.json stays readable both ways."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from thumbify import keys

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_a_key_carries_its_callback_and_secret_and_old_entries_still_read(tmp_path) -> None:
    _, key = keys.new_key("alice", ["submit"])
    assert "callback_url" not in key.entry() and "webhook_secret" not in key.entry()  # old format unchanged
    hooked = replace(key, callback_url="https://hooks.example/t", webhook_secret=SECRET)
    path = tmp_path / "keys.json"
    keys.add_to_file(path, hooked)
    (read,) = keys.read_file(path)
    assert (read.callback_url, read.webhook_secret) == ("https://hooks.example/t", SECRET)
    path.write_text(json.dumps({"keys": [{"name": "old", "id": "ab12cd34", "sha256": "0" * 64, "scopes": ["read"]}]}))
    (old,) = keys.read_file(path)
    assert (old.callback_url, old.webhook_secret) == ("", "")
