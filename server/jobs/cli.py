"""`hotserve retrain-webhook`: the Alertmanager receiver that starts the retrain CronJob's Job.

The bearer token Alertmanager sends comes from HOTSERVE_RETRAIN_WEBHOOK_TOKEN (or the file
HOTSERVE_RETRAIN_WEBHOOK_TOKEN_FILE names), never a flag. The Kubernetes API, token, CA and
namespace are the pod's own unless given (tests point them at another API server).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_ALERTS = ("HotserveQualityBelowTraining",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cronjob", required=True, help="the retrain CronJob whose template the Job is made from")
    parser.add_argument(
        "--alert",
        action="append",
        dest="alerts",
        metavar="ALERTNAME",
        help=f"alert that starts a retrain (repeatable; default {', '.join(DEFAULT_ALERTS)})",
    )
    parser.add_argument("--model", help="only alerts about this model (their `model` label)")
    parser.add_argument(
        "--min-interval-s",
        type=float,
        default=3600.0,
        help="at most one alert-started retrain per interval while the alert keeps firing (default %(default)s)",
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8090)
    kube = parser.add_argument_group("Kubernetes API (default: the pod's own)")
    kube.add_argument("--kube-api", help="API server URL")
    kube.add_argument("--kube-token-file", type=Path, help="ServiceAccount token file")
    kube.add_argument("--kube-ca-file", type=Path, help="CA bundle of the API server")
    kube.add_argument("--namespace", help="namespace of the CronJob and its Jobs")


def _token() -> str:
    path = os.environ.get("HOTSERVE_RETRAIN_WEBHOOK_TOKEN_FILE", "").strip()
    if path:
        return Path(path).read_text().strip()
    return os.environ.get("HOTSERVE_RETRAIN_WEBHOOK_TOKEN", "").strip()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from server.jobs.kube import KubeClient, KubeConfig, KubeError
    from server.jobs.trigger import Trigger
    from server.jobs.webhook import create_webhook_app

    try:
        token = _token()
        if not token:
            raise ValueError("set HOTSERVE_RETRAIN_WEBHOOK_TOKEN (or _FILE) to the token Alertmanager sends")
        config = KubeConfig.in_cluster(args.kube_api, args.kube_token_file, args.kube_ca_file, args.namespace)
    except (KubeError, ValueError, OSError) as error:
        print(f"hotserve retrain-webhook: {error}", file=sys.stderr)
        return 2
    trigger = Trigger(KubeClient(config), args.cronjob, args.alerts or DEFAULT_ALERTS, args.model, args.min_interval_s)
    uvicorn.run(create_webhook_app(trigger, token), host=args.host, port=args.port, log_level="info")
    return 0
