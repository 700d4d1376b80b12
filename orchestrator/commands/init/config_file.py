"""The annotated window.toml ``window init`` writes."""

from __future__ import annotations

import textwrap

from orchestrator.commands.init.options import SSH_SECRETS, Options

_KEY, _KNOWN_HOSTS, _TARGET = SSH_SECRETS
# Where the workflow writes the ssh banner's key (from the BANNER_SSH_KEY secret).
SSH_KEY_PATH = "~/.ssh/window_banner"
SSH = (f"ssh -i {SSH_KEY_PATH} -o BatchMode=yes -o StrictHostKeyChecking=yes"
       f' "${_TARGET}"')


def _commented(line: str, comment: str) -> str:
    """``line``, then ``comment`` in the column the other comments start in."""
    return f"{line.ljust(36)} # {comment}"


def _staging(options: Options) -> str:
    variable = options.staging_variable
    if variable is None:  # a copy of production restored beside it, dropped afterwards
        return textwrap.dedent("""\
            [staging]                            # no staging database: rehearse on a copy
            mode = "clone"                       # of production, restored on its server
            clone_on = "production"              # (needs CREATEDB there), dropped afterwards
            """)
    mode = ('mode = "clone"                       # rehearse on a fresh copy of production'
            if options.clone else
            '# mode = "clone"                     # rehearse on a fresh copy of production')
    return textwrap.dedent(f"""\
        [staging]
        {_commented(f'url_env = "{variable}"', "the migration is rehearsed here first")}
        {mode}
        """)


def _banner(options: Options) -> str:
    if options.banner == "ssh":
        return textwrap.dedent(f"""\
            # The banner on the web server, over ssh: the workflow writes the key from the
            # {_KEY} secret and the host's key from {_KNOWN_HOSTS}; ${_TARGET}
            # (user@host) comes from its secret. nginx serves the page while the flag exists.
            [banner]
            kind = "command"
            on = '{SSH} touch /var/www/maintenance.on'
            off = '{SSH} rm -f /var/www/maintenance.on'
            """)
    if options.banner == "http":
        return textwrap.dedent("""\
            [banner]                             # an endpoint that switches the site's page
            kind = "http"                        # (a CDN rule, a feature flag service)
            on_url = "https://example.com/maintenance/on"    # replace with your endpoints
            off_url = "https://example.com/maintenance/off"
            # headers = { Authorization = "Bearer ..." }   # redacted from every output
            """)
    return textwrap.dedent(f"""\
        [banner]
        kind = "file"                        # "command" | "file" | "http"
        path = "{options.page}"   # the page the web server looks for
        message = "We are upgrading our database and will be back shortly."
        # template = "maintenance.template.html"   # HTML with $message and $ends_at
        # kind = "command"                   # or `window init --banner ssh`
        # on = "php artisan down --retry=60"
        # off = "php artisan up"
        # kind = "http"                      # or `window init --banner http`
        # on_url = "https://api.example.com/maintenance/on"
        # off_url = "https://api.example.com/maintenance/off"
        # headers = {{ Authorization = "Bearer ..." }}   # redacted from every output
        """)


def _migrate(options: Options) -> str:
    workdir = f'workdir = "{options.workdir}"' if options.workdir else '# workdir = "frontend"'
    if options.prisma:
        return textwrap.dedent(f"""\
            [migrate]
            command = "{options.runner} prisma migrate deploy"  # staging first, then production
            {workdir}                  # the migration and the command checks run here
            tool = "prisma"                      # the window reads _prisma_migrations
            files = "{options.inside('prisma/migrations')}"   # nothing pending: `run` exits 0
            # lock_timeout = "5s"                # fail fast behind a lock, never queue users
            """)
    command = (f"{options.runner} run migrate" if options.package_manager
               else "./scripts/migrate.sh")
    return textwrap.dedent(f"""\
        [migrate]
        command = "{command}"   # must apply only what is pending: staging, then production
        {workdir}
        tool = "none"                        # "prisma" | "alembic" | "flyway": reads its table
        # files = "migrations"
        """)


def _checks(options: Options) -> str:
    prisma = textwrap.dedent(f"""
        [[checks]]
        name = "schema-up-to-date"
        kind = "command"                     # passes on exit 0 and the expected output
        command = "{options.runner} prisma migrate status"   # in [migrate] workdir
        expect_output = "Database schema is up to date!"
        """) if options.prisma else ""
    return prisma + textwrap.dedent("""
        [[checks]]
        name = "database-answers"
        kind = "sql"                         # passes when the first value is true
        query = "SELECT true"

        # [[checks]]
        # name = "health"
        # kind = "http"                      # retried until its timeout; reads the body too
        # url = "https://example.com/api/healthz"
        # expect_status = 200
        """)


def window_toml(options: Options) -> str:
    return textwrap.dedent(f"""\
        # The maintenance window `window run` carries out (see `window plan`).
        # Paths are relative to this file's folder. Written by `window init`.

        [window]
        name = "{options.name}"
        confirm_phrase = "{options.phrase}"  # typed (or passed with --confirm) to start
        # state_dir = ".window"              # journal, audit log and report.md / report.html
        # length = "45m"                     # the announced window; default: the timeouts

        [contacts]                           # `plan` and `run` refuse until these are real
        on_call = "<name and phone>"
        backup = "<name and phone>"
        db_support = "<name and phone>"
        decision_maker = "<name and phone>"

        [target]
        {_commented(f'url_env = "{options.production_env}"', "production, from the environment")}

        """) + _staging(options) + textwrap.dedent("""
        [backup]
        dir = "backups"                      # pg_dump -Fd, proven by a restore
        jobs = 2
        # s3_uri = "s3://bucket/windows"     # keep it off the machine (CI runners vanish)

        """) + _banner(options) + "\n" + _migrate(options) + textwrap.dedent("""
        [timeouts]          # seconds, or "90s", "10m", "1h"; defaults: the runbook's timeline
        # staging_dry_run = "15m"
        # backup = "10m"
        # migrate = "5m"
        # post_check = "5m"
        # rollback = "10m"
        """) + _checks(options)
