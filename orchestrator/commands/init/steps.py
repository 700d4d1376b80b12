"""The shell of the workflow's steps, kept apart from its YAML so each reads as a script.

None holds a ``${{ }}`` expression: GitHub hands every value in through the step's ``env``,
so a typed input never becomes shell code, and a test runs these scripts with bash as the
runner would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

CONFIG = "window.toml"
# https://www.postgresql.org/download/linux/ubuntu/ (the repository's documented setup)
PGDG_KEY = "https://www.postgresql.org/media/keys/ACCC4CF8.asc"
PGDG_REPO = "https://apt.postgresql.org/pub/repos/apt"
KEYRING = "/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"

PHRASE = """\
if [ "$CONFIRM" != "$WINDOW_PHRASE" ]; then
  echo "::error::The confirmation phrase does not match: nothing was run."
  exit 1
fi
"""


def has_variable(name: str) -> str:
    """The step's env variable telling whether a secret is set (its value never enters)."""
    return f"HAS_{name}"


def secrets_check(secrets: Sequence[str]) -> str:
    lines = ['missing=""']
    lines += [f'[ "${has_variable(name)}" = true ] || missing="$missing {name}"'
              for name in secrets]
    lines += ['if [ -n "$missing" ]; then',
              '  echo "::error::Set these repository secrets (Settings > Secrets and variables'
              ' > Actions):$missing"',
              "  exit 1", "fi"]
    return "\n".join(lines) + "\n"


def postgres_client() -> str:
    """The PostgreSQL client of ``$PG_VERSION`` from the PostgreSQL project's repository
    (Ubuntu's own is older than the servers it would dump)."""
    return f"""\
sudo install -d /usr/share/postgresql-common/pgdg
sudo curl -fsSL -o {KEYRING} {PGDG_KEY}
. /etc/os-release
echo "deb [signed-by={KEYRING}] {PGDG_REPO} $VERSION_CODENAME-pgdg main" \\
  | sudo tee /etc/apt/sources.list.d/pgdg.list
sudo apt-get update -q
sudo apt-get install -y -q "postgresql-client-$PG_VERSION"
pg_dump --version
"""


def install_window(requirement: str) -> str:
    """Exactly this tool, pinned: the distribution is pgwindow (the command is window)."""
    return f'python -m pip install "{requirement}"\n'


def pinned(version: str, direct_url: str | None) -> str:
    """The requirement that installs this very copy on a runner: the commit it came from
    when pip installed it from a git repository the runner can reach (PEP 610's
    ``direct_url.json``), else its version from the package index."""
    try:
        found = json.loads(direct_url) if direct_url else {}
    except ValueError:
        found = {}
    vcs = found.get("vcs_info") if isinstance(found, dict) else None
    url = found.get("url", "") if isinstance(found, dict) else ""
    if isinstance(vcs, dict) and vcs.get("vcs") == "git" and vcs.get("commit_id") \
            and isinstance(url, str) and url.startswith(("https://", "ssh://", "git://")):
        return f"pgwindow @ git+{url}@{vcs['commit_id']}"
    return f"pgwindow=={version}"


SSH_KEY = """\
umask 077
mkdir -p ~/.ssh
printf '%s\\n' "$BANNER_SSH_KEY" > ~/.ssh/window_banner
printf '%s\\n' "$BANNER_SSH_KNOWN_HOSTS" >> ~/.ssh/known_hosts
"""

# What a re-run of a failed job does, by how the last window ended (`window status --json`).
WHAT_TO_DO = {
    "1": "The last window failed and was rolled back (production holds its backup): fix the"
         " migration, then start a new run of this workflow instead of re-running this one.",
    "3": "The last window was refused before production changed (its reason is in the"
         " previous attempt's log and report): fix that, then start a new run of this"
         " workflow instead of re-running this one.",
    "4": "The last window needs attention (a rollback or the banner's removal failed): follow"
         " the steps in the previous attempt's log and report by hand; do not re-run this job.",
}


def run_window() -> str:
    """The first attempt runs the window; a re-run resumes an interrupted one, says what to
    do instead after a rollback, a refusal or a needed hand, and otherwise runs it."""
    cases = "\n".join(f'''    {code})
      echo "::error::{sentence}"
      exit 1 ;;''' for code, sentence in WHAT_TO_DO.items())
    return f"""\
if [ "$ATTEMPT" -gt 1 ] && window status --config {CONFIG} --json > window-status.json; then
  outcome=$(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
print("interrupted" if s["interrupted"] else s["exit_code"])' window-status.json)
  rm -f window-status.json
  case "$outcome" in
    interrupted)
      echo "Attempt $ATTEMPT resumes the interrupted window."
      exec window resume --config {CONFIG} ;;
{cases}
  esac
fi
rm -f window-status.json
exec window run --config {CONFIG} --confirm "$CONFIRM"
"""


# The fleet's workflow: its jobs hand values on through $GITHUB_OUTPUT, as GitHub reads it.
FLEET_PLAN = """\
window fleet plan "$FLEET_FILE" --json > fleet-plan.json
python3 -c 'import json, sys; p = json.load(open(sys.argv[1]))
print("canary=" + p["canary"])
print("waves=" + json.dumps([n for wave in p["waves"][1:] for n in wave]))' fleet-plan.json \\
  >> "$GITHUB_OUTPUT"
cat fleet-plan.json
rm -f fleet-plan.json
"""

# The targets job opens the fleet run behind the phrase (refused while the last one has not
# ended) and names it for the other jobs: they run their targets' windows in it.
FLEET_OPEN = """\
window fleet open "$FLEET_FILE" --confirm "$CONFIRM"
window fleet status "$FLEET_FILE" --json > fleet-status.json
python3 -c 'import json, sys
print("fleet_run=" + json.load(open(sys.argv[1]))["fleet_run"])' fleet-status.json \\
  >> "$GITHUB_OUTPUT"
rm -f fleet-status.json
"""

# A target's job (the canary's, or a wave's): its window once its wave is due, in the fleet
# run the targets job opened; a stopped fleet starts it never, a re-run resumes it from its
# journal (its lease in S3 keeps any other job from running it at the same time).
FLEET_TARGET = """\
exec window fleet resume "$FLEET_FILE" --target "$TARGET" --fleet-run "$FLEET_RUN"
"""
