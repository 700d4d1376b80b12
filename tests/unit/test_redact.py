from __future__ import annotations

from orchestrator import redact


def test_url_passwords_are_masked_even_unregistered() -> None:
    text = "failed: postgresql://app:hunter2@db.internal:5432/shop and redis://:tok3n@cache/0"
    assert redact.redact(text) == ("failed: postgresql://app:***@db.internal:5432/shop"
                                   " and redis://:***@cache/0")


def test_registered_secrets_are_masked_in_any_encoding() -> None:
    redact.register_url("postgresql://app:p%40ss%3Aw%2Frd%C3%A9@h/db")
    assert redact.redact("PGPASSWORD=p@ss:w/rdé") == "PGPASSWORD=***"
    assert redact.redact("quoted p%40ss%3Aw%2Frd%C3%A9 here") == "quoted *** here"


def test_keyword_conninfo_passwords_are_masked() -> None:
    assert redact.redact("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert redact.redact("host=h password=abc user=u") == "host=h password=*** user=u"


def test_text_without_secrets_is_unchanged() -> None:
    assert redact.redact("ALTER TABLE orders ADD COLUMN status text") == (
        "ALTER TABLE orders ADD COLUMN status text")


def test_password_variables_are_masked() -> None:
    assert redact.redact("PGPASSWORD=s3cret psql") == "PGPASSWORD=*** psql"
    assert redact.redact("db_password: s3cret") == "db_password: ***"


def test_nested_values_are_masked_before_encoding() -> None:
    redact.register("pä\"ss")
    assert redact.redact_value({"a": ["x pä\"ss y", 3], "b": ("pä\"ss",)}) == {
        "a": ["x *** y", 3], "b": ["***"]}
