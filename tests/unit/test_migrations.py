"""Reading migration files without a database: Flyway's checksums and versions as Flyway
computes them, and every mistake in the files as one ConfigError sentence naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import config
from orchestrator.errors import ConfigError
from orchestrator.postgres import migrations
from orchestrator.postgres.migrations import Folder
from tests.support.settings import make_settings


def write(folder: Path, files: dict[str, str | bytes]) -> Folder:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return Folder(folder, folder.name)


def revision(rev: str, down: str = "None") -> str:
    return f'"""{rev}"""\nrevision = "{rev}"\ndown_revision = {down}\n'


def error(reader: object, folder: Folder) -> str:
    assert callable(reader)
    with pytest.raises(ConfigError) as raised:
        reader(folder)
    return raised.value.message


# Computed with java.util.zip.CRC32 over BufferedReader.readLine() lines, BOM filtered from the
# first line: the steps of Flyway's ChecksumCalculator.calculateChecksumForResource.
@pytest.mark.parametrize(("text", "java"), [
    ("SELECT 1;", 78787420),
    ("CREATE VIEW v AS SELECT 1;\n", 895998086),
    ("CREATE VIEW v AS SELECT 1;\r\n-- ünïcode\r\n", 2049295383),
    ("\ufeffSELECT 1;\n", 78787420),  # a leading BOM does not count
    ("a\vb\u2028c\fd\n", 572285974),  # only \n, \r and \r\n end a line, unlike splitlines()
    ("x\ry\n\nz", -342967705),  # signed, as Flyway's int column holds it
    ("", 0),
])
def test_flyway_checksums_match_java(text: str, java: int) -> None:
    assert migrations.flyway_checksum(text) == java


def test_flyway_checksums_ignore_line_endings_but_not_content() -> None:
    lf = migrations.flyway_checksum("a\nb\n")
    assert migrations.flyway_checksum("a\r\nb\r\n") == migrations.flyway_checksum("a\rb") == lf
    assert migrations.flyway_checksum("a\n\ufeffb") != lf  # a BOM after the first line counts


def test_flyway_versions_compare_as_flyway_compares_them() -> None:
    version = migrations.flyway_version
    assert version("1_1") == version("1.1") == version("1.01") == (1, 1)
    assert version("1.0") == version("1") == (1,)
    assert version("1.9.9") < version("2") < version("10")
    for odd in ("1a", "", "1..2", "1.", "x"):
        with pytest.raises(ValueError, match="not a Flyway version"):
            version(odd)


def test_flyway_scripts_in_flyway_order_with_repeatables_by_description(tmp_path: Path) -> None:
    folder = write(tmp_path / "sql", {
        "V10__late.sql": "", "V2__b.sql": "", "nested/V1_1__a.sql": "", "U2__undo_b.sql": "",
        "R__my_views.sql": "SELECT 1;", "R__grants.sql": "", "README.md": "", "Views.sql": ""})

    versioned, repeatable = migrations.flyway_scripts(folder)

    assert list(versioned.values()) == ["V1_1__a.sql", "V2__b.sql", "V10__late.sql"]
    assert repeatable == {"grants": ("R__grants.sql", 0), "my views": ("R__my_views.sql", 78787420)}


@pytest.mark.parametrize(("files", "message"), [
    ({"V1a__x.sql": ""}, "[migrate] files: sql/V1a__x.sql cannot be read: version '1a' is not a"
                         " Flyway version (numbers separated by . or _)."),
    ({"V1__a.sql": "", "V1_0__b.sql": ""}, "[migrate] files: sql/V1__a.sql repeats the version"
                                          " of V1_0__b.sql."),
    ({"R__views.sql": b"\xffSELECT"}, "[migrate] files: sql/R__views.sql cannot be read: it is"
                                      " not utf-8 (byte 0xff at offset 0)."),
    ({"notes.txt": "", "U1__undo.sql": ""}, "[migrate] files: sql holds no V<version>__<name>.sql"
                                            " or R__<name>.sql script."),
])
def test_flyway_file_mistakes_are_config_errors(tmp_path: Path, files: dict[str, str | bytes],
                                                message: str) -> None:
    assert error(migrations.flyway_scripts, write(tmp_path / "sql", files)) == message


def test_a_flyway_script_that_cannot_be_opened_is_named(tmp_path: Path) -> None:
    folder = write(tmp_path / "sql", {"V1__a.sql": ""})
    (tmp_path / "sql" / "R__gone.sql").symlink_to(tmp_path / "nowhere.sql")

    assert error(migrations.flyway_scripts, folder) == (
        "[migrate] files: sql/R__gone.sql cannot be read: No such file or directory.")


def test_alembic_revisions_parents_first(tmp_path: Path) -> None:
    folder = write(tmp_path / "versions", {
        "c_step.py": revision("c3", '("b2", "x9")'), "a_step.py": revision("a1"),
        "b_step.py": revision("b2", "'a1'"), "x_step.py": revision("x9", "['a1']"),
        "__init__.py": "", "helpers.py": "def shared() -> None:\n    pass\n"})

    revisions = migrations.alembic_revisions(folder)

    assert revisions == {"a1": (), "b2": ("a1",), "x9": ("a1",), "c3": ("b2", "x9")}
    order = list(revisions)
    assert order.index("a1") < order.index("b2") < order.index("c3") > order.index("x9") > 0


def test_alembic_scripts_are_decoded_as_python_imports_them(tmp_path: Path) -> None:
    folder = write(tmp_path / "versions", {
        "a_step.py": b"\xef\xbb\xbf" + revision("a1").encode(),  # a BOM, as some editors save
        "b_step.py": b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + revision("b2", "'a1'").encode()})

    assert migrations.alembic_revisions(folder) == {"a1": (), "b2": ("a1",)}


@pytest.mark.parametrize(("files", "message"), [
    ({"abc_step.py": "# coding: klingon\n" + revision("abc")},
     "[migrate] files: versions/abc_step.py cannot be read: unknown encoding: klingon."),
    ({"abc_step.py": 'revision = "abc"\ndown_revision = None\ndef upgrade(:\n    pass\n'},
     "[migrate] files: versions/abc_step.py cannot be read: invalid syntax (line 3)."),
    ({"abc_step.py": revision("abc", "5")},
     "[migrate] files: versions/abc_step.py cannot be read: down_revision = 5 is neither None,"
     " a revision id nor a tuple of them."),
    ({"abc_step.py": revision("abc", "('a1', 5)")},
     "[migrate] files: versions/abc_step.py cannot be read: down_revision = ('a1', 5) is"
     " neither None, a revision id nor a tuple of them."),
    ({"abc_step.py": "revision = 5\ndown_revision = None\n"},
     "[migrate] files: versions/abc_step.py cannot be read: revision = 5 is not a revision id"
     " (a string)."),
    ({"abc_step.py": b'revision = "abc"\n# caf\xe9\n'},
     "[migrate] files: versions/abc_step.py cannot be read: it is not utf-8 (byte 0xe9 at"
     " offset 22)."),
    ({"abc_step.py": b'revision = "abc"\x00\n'},
     "[migrate] files: versions/abc_step.py cannot be read: source code string cannot contain"
     " null bytes."),
    ({"a_step.py": revision("a1", "'b2'"), "b_step.py": revision("b2", "'a1'")},
     "[migrate] files: versions holds revisions that follow each other in a cycle:"
     " a1 -> b2 -> a1."),
    ({"__init__.py": "", "env.py": "import alembic\n"},
     "[migrate] files: versions holds no Alembic revision (a script assigning revision)."),
])
def test_alembic_file_mistakes_are_config_errors(tmp_path: Path, files: dict[str, str | bytes],
                                                 message: str) -> None:
    assert error(migrations.alembic_revisions, write(tmp_path / "versions", files)) == message


def test_an_alembic_folder_as_configured_names_its_files_as_configured(tmp_path: Path) -> None:
    write(tmp_path / "alembic" / "versions", {"sub/abc_step.py": "revision = (\n"})
    folder = Folder(tmp_path / "alembic" / "versions", "alembic/versions")

    assert error(migrations.alembic_revisions, folder).startswith(
        "[migrate] files: alembic/versions/sub/abc_step.py cannot be read:")


def test_a_prisma_folder_without_migrations_is_a_config_error(tmp_path: Path) -> None:
    folder = write(tmp_path / "migrations", {"migration_lock.toml": 'provider = "postgresql"\n',
                                             "20261101000000_init/README.md": ""})

    assert error(migrations.prisma_migrations, folder) == (
        "[migrate] files: migrations holds no <name>/migration.sql migration folder.")

    write(tmp_path / "migrations", {"20261101000000_init/migration.sql": "SELECT 1;"})
    assert migrations.prisma_migrations(folder) == ("20261101000000_init",)


def test_the_fingerprint_covers_what_the_tool_runs_and_how(tmp_path: Path) -> None:
    """An import's __pycache__ or an editor's swap file is not a change to the migrations;
    a changed script, a script behind a symlinked folder, or another command is."""
    versions = tmp_path / "versions"
    write(versions, {"a1_init.py": revision("a1")})
    shared = tmp_path / "shared"
    write(shared, {"b2_next.py": revision("b2", '"a1"')})
    (versions / "more").symlink_to(shared)

    def settings(command: str = "alembic upgrade head") -> config.Settings:
        return make_settings(tmp_path, migrate={"command": command, "tool": "alembic",
                                                "files": "versions"})

    before = migrations.fingerprint(settings())
    write(versions, {"__pycache__/a1_init.cpython-311.pyc": b"\0", ".a1_init.py.swp": "x"})
    assert migrations.fingerprint(settings()) == before
    assert migrations.fingerprint(settings("alembic upgrade +1")) != before
    (shared / "b2_next.py").write_text(revision("b2", '"a1"') + "# edited\n")
    assert migrations.fingerprint(settings()) != before
