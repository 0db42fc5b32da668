"""Create or update the Prefect automations of dvc-etl on the server in PREFECT_API_URL (``make deploy``).

Each ``deploy/automation-*.json`` is one automation, found on the server by its name: created when
missing, updated in place when it exists (duplicates of the name are deleted), so running this
again changes nothing but what the files changed. Automations of earlier versions listed in
:data:`RETIRED` are deleted (the old "failed or crashed" one would alert a failed run a second
time, after the flows' failure hook).

Placeholders the files carry, filled in here:

- ``$NOTIFICATION_BLOCK_ID``: the notification block the alerts go through, ``--block`` (default
  ``dvc-alerts``). With ``DVC_ALERT_WEBHOOK_URL`` set (environment or ``.env``, as for the flows)
  the block is (re)written first as a Custom Webhook block that posts ``{"text": ...}`` to that
  URL (Slack-compatible, like the flows' own alerts), the URL kept in the block's secrets. Without
  it, an existing notification block of that name (any type: Slack, Microsoft Teams, e-mail...) is
  used; none at all is an error (exit 2) naming what to do.
- ``$NIGHTLY_DEPLOYMENT_ID``: the id of the deployment ``dvc-nightly/nightly`` (run ``prefect
  deploy`` first, as ``make deploy`` does).

Usage: ``python deploy/automations.py [--block NAME] [--dry-run]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: The automations, one file each.
FILES = sorted(HERE.glob("automation-*.json"))
#: Names of automations earlier versions created, deleted when found.
RETIRED = ("dvc-etl: flow run failed or crashed",)
NIGHTLY_DEPLOYMENT = "dvc-nightly/nightly"
BLOCK_PLACEHOLDER = "$NOTIFICATION_BLOCK_ID"
NIGHTLY_PLACEHOLDER = "$NIGHTLY_DEPLOYMENT_ID"


class SetupError(RuntimeError):
    """Something the automations need is missing on the server; the message says what to do."""


def fill(value: Any, values: dict[str, str]) -> Any:
    """``value`` (parsed JSON) with every placeholder in its strings replaced."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, str):
        for key, replacement in values.items():
            value = value.replace(key, replacement)
    return value


def webhook_url() -> str | None:
    """``DVC_ALERT_WEBHOOK_URL`` as the flows read it (environment, then ``.env``)."""
    url = os.environ.get("DVC_ALERT_WEBHOOK_URL")
    if url:
        return url
    try:
        from tasks.settings import get_settings

        return get_settings().alert_webhook_url or None
    except Exception:  # noqa: BLE001 - other settings may be incomplete on the deploying machine
        return None


def notification_block_id(client: Any, name: str) -> str:
    """The id of the notification block ``name``, written first from DVC_ALERT_WEBHOOK_URL if set."""
    url = webhook_url()
    if url:
        from prefect.blocks.notifications import CustomWebhookNotificationBlock

        block = CustomWebhookNotificationBlock(
            name="dvc-etl", url="{{webhook_url}}", secrets={"webhook_url": url},
            json_data={"text": "{{subject}}\n{{body}}"},
        )
        return str(block.save(name, overwrite=True))
    found = [b for b in client.read_block_documents() if b.name == name and b.block_schema is not None
             and "notify" in (b.block_schema.capabilities or [])]
    if not found:
        raise SetupError(
            f"no notification block named {name!r} on the server: set DVC_ALERT_WEBHOOK_URL (the Slack-compatible "
            f"webhook of the flows' alerts) and run again, or create a notification block of that name "
            f"(Slack, Microsoft Teams, e-mail... in the UI under Blocks) and pass --block NAME")
    found.sort(key=lambda b: b.block_type.slug != "custom-webhook" if b.block_type else True)
    return str(found[0].id)


def load_automations(values: dict[str, str]) -> list[Any]:
    from prefect.events.schemas.automations import AutomationCore

    return [AutomationCore.model_validate(fill(json.loads(f.read_text(encoding="utf-8")), values)) for f in FILES]


def apply(client: Any, automations: list[Any]) -> list[str]:
    """Create or update each automation by name; delete duplicates and retired names. Returns
    one line per action."""
    done = []
    for automation in automations:
        existing = client.read_automations_by_name(automation.name)
        if existing:
            keep, *extra = sorted(existing, key=lambda a: str(a.id))
            client.update_automation(keep.id, automation)
            for a in extra:
                client.delete_automation(a.id)
            done.append(f"updated automation {automation.name!r} ({keep.id})"
                        + (f", {len(extra)} duplicate(s) deleted" if extra else ""))
        else:
            done.append(f"created automation {automation.name!r} ({client.create_automation(automation)})")
    for name in RETIRED:
        for a in client.read_automations_by_name(name):
            client.delete_automation(a.id)
            done.append(f"deleted retired automation {name!r} ({a.id})")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", default="dvc-alerts", help="notification block the alerts go through")
    parser.add_argument("--dry-run", action="store_true", help="print the automations, change nothing")
    args = parser.parse_args(argv)

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            try:
                nightly = client.read_deployment_by_name(NIGHTLY_DEPLOYMENT)
            except ObjectNotFound:
                raise SetupError(f"no deployment {NIGHTLY_DEPLOYMENT} on the server: run `prefect deploy --all` "
                                 f"from the project folder first (make deploy does)") from None
            block_id = "00000000-0000-0000-0000-000000000000" if args.dry_run else notification_block_id(
                client, args.block)
        except SetupError as exc:
            print(f"automations: {exc}", file=sys.stderr)
            return 2
        automations = load_automations({BLOCK_PLACEHOLDER: block_id, NIGHTLY_PLACEHOLDER: str(nightly.id)})
        if args.dry_run:
            for a in automations:
                print(a.model_dump_json(indent=2))
            return 0
        for line in apply(client, automations):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
