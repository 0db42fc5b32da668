"""The README must document every setting (name and default)."""

import re

from tasks.settings import PROJECT_ROOT, Settings


def test_readme_lists_every_setting():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f"DVC_{name.upper()}" for name in Settings.model_fields if f"DVC_{name.upper()}" not in readme]
    assert not missing, f"README does not document: {missing}"


def test_secrets_do_not_print(monkeypatch):
    monkeypatch.setenv("DVC_SOURCE_TOKEN", "tok-very-secret")
    monkeypatch.setenv("DVC_SMTP_PASSWORD", "pw-very-secret")
    s = Settings()
    text = repr(s) + str(s) + str(s.model_dump())
    assert "tok-very-secret" not in text and "pw-very-secret" not in text
    assert s.source_token.get_secret_value() == "tok-very-secret"


def test_every_setting_has_a_description():
    assert all(f.description for f in Settings.model_fields.values())
    assert all(re.fullmatch(r"[a-z_]+", n) for n in Settings.model_fields)
