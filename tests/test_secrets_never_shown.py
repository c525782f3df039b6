"""Known secret values, a real worker at DEBUG, every command's output: none of them shows."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.processes import TRACKER, command, start_run, stop, tracker_env, wait_until
from tests.receivers import SECRET, free_port
from worker.pave.simulator import Simulator, running_simulator

PAVE_SECRET = "known-pave-secret-4242"
CRM_TOKEN = "known-crm-token-9898"
SMTP_PASSWORD = "known-smtp-pass-7777"
DB_PASSWORD = "known-db-pass-5555"
API_TOKEN = "known-api-token-123456"
PUSH_TOKEN = "known-push-token-654321"
SECRETS = [PAVE_SECRET, CRM_TOKEN, SMTP_PASSWORD, DB_PASSWORD, API_TOKEN, PUSH_TOKEN,
           SECRET, SECRET.removeprefix("whsec_")]


def test_no_secret_in_any_log_line_or_output(
    tmp_path: Path, pg_url: str, tracker_process: list[subprocess.Popen[bytes]]
) -> None:
    simulator = Simulator(api_secret=PAVE_SECRET)
    closed = free_port()  # every target fails, so every error path gets logged
    (tmp_path / "pave-tracker.toml").write_text(f'''
[[crm]]
name = "crm"
url = "http://127.0.0.1:{closed}/api?token={CRM_TOKEN}"
body_template = '{{"key": {{{{ session_key | tojson }}}}}}'
auth_value_env = "CRM_TOKEN"
events = ["session.status_changed"]
''')
    database_url = pg_url.replace("postgres@", f"postgres:{DB_PASSWORD}@")
    with running_simulator(simulator) as url:
        env = tracker_env(
            url, PAVE_API_SECRET=PAVE_SECRET, DATABASE_URL=database_url,
            CRM_TOKEN=f"Bearer {CRM_TOKEN}", LOG_LEVEL="debug", LOG_FORMAT="json",
            WEBHOOK_URL=f"http://127.0.0.1:{closed}/hook", WEBHOOK_SECRET=SECRET,
            SMTP_URL=f"smtp://desk:{SMTP_PASSWORD}@127.0.0.1:{closed}",
            EMAIL_FROM="a@dealer.example", EMAIL_TO="b@dealer.example",
            API_TOKENS=API_TOKEN, PAVE_PUSH_TOKEN=PUSH_TOKEN,
            DELIVERY_RETRY_SCHEDULE="0.2,0.2",
        )
        simulator.add_session("SECRET-1", [("IDLE", 0.5), ("COMPLETE", None)])
        outputs = [command(env, tmp_path, "track", "SECRET-1", "--email", "c@example.com")]
        process = start_run(env, tmp_path, tracker_process, loglevel="debug")
        wait_until(lambda: '"dead"' in command(env, tmp_path, "deliveries", "--json")
                   and "retrying" not in command(env, tmp_path, "deliveries", "--json")
                   and "pending" not in command(env, tmp_path, "deliveries", "--json"),
                   90, "the deliveries never ended")
        outputs += [command(env, tmp_path, *args) for args in (
            ["show", "SECRET-1"], ["show", "SECRET-1", "--json"], ["list", "--json"],
            ["deliveries", "--json"], ["deliveries"])]
        checked = subprocess.run([TRACKER, "check"], env=env,
                                 cwd=tmp_path, capture_output=True, text=True, timeout=60)
        outputs += [checked.stdout, checked.stderr]
        stop(process)
    log = (tmp_path / "run.log").read_text()
    assert '"level": "DEBUG"' in log and "delivery" in log  # the log really was chatty
    for text in [log, *outputs]:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked"
