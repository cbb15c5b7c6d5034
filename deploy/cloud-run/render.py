#!/usr/bin/env python3
"""Render the Cloud Run manifests of coditect-issuer from container.json.

container.json (next to this script) is the one description of the
container: command line, environment, secrets, mounted files, and the
service's and the migrate job's settings. Python 3 standard library only.

  render.py                     rewrite service.yaml and migrate-job.yaml here,
                                with the placeholders (the committed templates)
  render.py --check             fail when the committed files differ from what
                                would be rendered, or when the Dockerfile or
                                .env.example disagree with container.json
  render.py --params prod.json --out DIR
                                render for a real deployment into DIR; every
                                parameter must be set (--params and/or --set)
  render.py --local [--root DIR] [--set NAME=VALUE ...]
                                print the container's args, environment and
                                files as JSON, for running the binary outside
                                Cloud Run (secrets stay named, not resolved)

See docs/deploy-cloud-run.md.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SOURCE = HERE / "container.json"
OUTPUTS = ("service.yaml", "migrate-job.yaml")
PARAM = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class RenderError(Exception):
    pass


# --------------------------------------------------------------------------
# Parameters


def load_source() -> dict:
    with SOURCE.open(encoding="utf-8") as f:
        return json.load(f)


def substitute(value, params: dict[str, str]):
    """Replaces ${NAME} in every string of a JSON value."""
    if isinstance(value, str):

        def one(m: re.Match) -> str:
            name = m.group(1)
            if name not in params:
                raise RenderError(f"container.json uses ${{{name}}}, which is not a parameter")
            return params[name]

        return PARAM.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    return value


def parameters(source: dict, given: dict[str, str], require_all: bool) -> dict[str, str]:
    declared = source["parameters"]
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise RenderError(f"unknown parameter(s): {', '.join(unknown)} (declared: {', '.join(declared)})")
    if require_all:
        missing = [name for name in declared if name not in given]
        if missing:
            raise RenderError(
                "a deployment must set every parameter; missing: "
                + ", ".join(missing)
                + " (--params FILE or --set NAME=VALUE)"
            )
    return {name: given.get(name, spec["placeholder"]) for name, spec in declared.items()}


# --------------------------------------------------------------------------
# A small YAML writer: mappings, sequences, strings, integers, booleans, and
# comments. Strings are plain when YAML would read them back as the same
# string, else double-quoted JSON strings (valid YAML).

PLAIN = re.compile(r"^[A-Za-z/][A-Za-z0-9_./@:=+-]*$")
YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


class Comment:
    """A comment line placed before the next key or item."""

    def __init__(self, text: str):
        self.text = text


def scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if PLAIN.match(value) and value.lower() not in YAML_WORDS and ": " not in value:
            return value
        return json.dumps(value, ensure_ascii=False)
    raise RenderError(f"cannot write {value!r} as YAML")


def is_scalar(value) -> bool:
    return isinstance(value, (str, int, bool))


def write_yaml(value, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, Comment):
                lines.extend(f"{pad}# {t}".rstrip() for t in item.text.split("\n"))
                continue
            if is_scalar(item):
                lines.append(f"{pad}{key}: {scalar(item)}")
            elif isinstance(item, list) and not item:
                lines.append(f"{pad}{key}: []")
            elif isinstance(item, list) and all(is_scalar(x) for x in item):
                lines.append(f"{pad}{key}: [{', '.join(scalar(x) for x in item)}]")
            else:
                lines.append(f"{pad}{key}:")
                # Sequences sit at their key's indentation (kubectl style).
                lines.extend(write_yaml(item, indent if isinstance(item, list) else indent + 2))
        return lines
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Comment):
                lines.extend(f"{pad}# {t}".rstrip() for t in item.text.split("\n"))
            elif is_scalar(item):
                lines.append(f"{pad}- {scalar(item)}")
            else:
                body = write_yaml(item, indent + 2)
                first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
                # Comments before the first key go above the dash.
                lines.extend(f"{pad}{line.lstrip()}" for line in body[:first])
                lines.append(f"{pad}- {body[first].lstrip()}")
                lines.extend(body[first + 1 :])
        return lines
    raise RenderError(f"cannot write {value!r} as a YAML block")


# --------------------------------------------------------------------------
# The manifests


def env_list(env: list[dict]) -> list[dict]:
    out = []
    for e in env:
        if "secret" in e:
            out.append(
                {
                    "name": e["name"],
                    "valueFrom": {
                        "secretKeyRef": {"name": e["secret"], "key": e.get("version", "latest")}
                    },
                }
            )
        else:
            out.append({"name": e["name"], "value": e["value"]})
    return out


def volumes(files: list[dict]) -> list[dict]:
    return [
        {
            "name": f["volume"],
            "secret": {
                "secretName": f["secret"],
                "items": [{"key": f.get("version", "latest"), "path": f["file"]}],
            },
        }
        for f in files
    ]


def volume_mounts(files: list[dict]) -> list[dict]:
    return [{"name": f["volume"], "mountPath": f["mount"], "readOnly": True} for f in files]


def probe(spec: dict, port: int) -> dict:
    return {
        "httpGet": {"path": spec["path"], "port": port},
        "periodSeconds": spec["period_seconds"],
        "timeoutSeconds": spec["timeout_seconds"],
        "failureThreshold": spec["failure_threshold"],
    }


def header(kind: str, command: str) -> list[str]:
    return [
        f"# coditect-issuer on Cloud Run: the {kind}.",
        "# GENERATED by deploy/cloud-run/render.py from container.json; do not edit.",
        "# Change container.json and run render.py (`render.py --check` fails until",
        "# this file matches). The committed file holds placeholders; render a real",
        "# one with `render.py --params FILE --out DIR`, then:",
        f"#   {command}",
        "# Guide: docs/deploy-cloud-run.md",
    ]


def service_yaml(c: dict, region: str) -> str:
    s = c["service"]
    port = s["port"]
    doc = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": s["name"],
            "labels": {"cloud.googleapis.com/location": region},
            "annotations": {
                "_": Comment(
                    "all: people, the CLI and Stripe reach it directly; behind a load\n"
                    "balancer, internal-and-cloud-load-balancing (and TRUST_PROXY=2)."
                ),
                "run.googleapis.com/ingress": s["ingress"],
            },
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "_1": Comment(
                            "min 1: no cold start for a renewal or a webhook; max bounds the\n"
                            "PostgreSQL connections (16 per instance) and the cost."
                        ),
                        "autoscaling.knative.dev/minScale": str(s["min_instances"]),
                        "autoscaling.knative.dev/maxScale": str(s["max_instances"]),
                        "_2": Comment("The Cloud SQL socket at /cloudsql/CONNECTION_NAME."),
                        "run.googleapis.com/cloudsql-instances": c["cloudsql_instance"],
                        "_3": Comment(
                            "CPU outside requests: the license-key mail, its retries, the audit\n"
                            "writer and the key-wiping housekeeping run in the background."
                        ),
                        "run.googleapis.com/cpu-throttling": str(not s["cpu_always_allocated"]).lower(),
                        "run.googleapis.com/startup-cpu-boost": "true",
                        "run.googleapis.com/execution-environment": "gen2",
                    }
                },
                "spec": {
                    "serviceAccountName": c["service_account"],
                    "containerConcurrency": s["concurrency"],
                    "_1": Comment(
                        "Request timeout. After SIGTERM Cloud Run waits 10 s before SIGKILL\n"
                        "(not configurable); the issuer stops accepting, gives requests in\n"
                        "flight up to 7 s, hands back claimed mail, writes the audit queue."
                    ),
                    "timeoutSeconds": s["request_timeout_seconds"],
                    "containers": [
                        {
                            "image": c["image"],
                            "args": s["args"],
                            "_1": Comment("Cloud Run sets PORT to containerPort; env may not set PORT."),
                            "ports": [{"name": "http1", "containerPort": port}],
                            "env": env_list(c["env"]),
                            "resources": {"limits": {"cpu": s["cpu"], "memory": s["memory"]}},
                            "volumeMounts": volume_mounts(c["files"]),
                            "_2": Comment(
                                "Ready when the database answers (/readyz); restarted only when\n"
                                "the process stops answering (/healthz), not for a database outage."
                            ),
                            "startupProbe": probe(s["startup_probe"], port),
                            "livenessProbe": probe(s["liveness_probe"], port),
                        }
                    ],
                    "volumes": volumes(c["files"]),
                },
            },
            "traffic": [{"percent": 100, "latestRevision": True}],
        },
    }
    command = "gcloud run services replace DIR/service.yaml --region REGION"
    return "\n".join(header("service", command) + write_yaml(doc)) + "\n"


def job_yaml(c: dict, region: str) -> str:
    j = c["migrate_job"]
    doc = {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {
            "name": j["name"],
            "labels": {"cloud.googleapis.com/location": region},
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "run.googleapis.com/cloudsql-instances": c["cloudsql_instance"],
                        "run.googleapis.com/execution-environment": "gen2",
                    }
                },
                "spec": {
                    "parallelism": 1,
                    "taskCount": 1,
                    "template": {
                        "spec": {
                            "serviceAccountName": c["service_account"],
                            "_1": Comment(
                                "A failed migration is looked at, not retried blindly (each\n"
                                "migration is one transaction, so a failure leaves nothing)."
                            ),
                            "maxRetries": j["max_retries"],
                            "timeoutSeconds": j["task_timeout_seconds"],
                            "containers": [
                                {
                                    "image": c["image"],
                                    "args": j["args"],
                                    "_1": Comment(
                                        "The same environment as the service: `migrate` loads the\n"
                                        "whole production configuration before it touches the schema."
                                    ),
                                    "env": env_list(c["env"]),
                                    "resources": {"limits": {"cpu": j["cpu"], "memory": j["memory"]}},
                                    "volumeMounts": volume_mounts(c["files"]),
                                }
                            ],
                            "volumes": volumes(c["files"]),
                        }
                    },
                },
            }
        },
    }
    command = (
        "gcloud run jobs replace DIR/migrate-job.yaml --region REGION &&\n"
        "#   gcloud run jobs execute coditect-issuer-migrate --region REGION --wait"
    )
    return "\n".join(header("migrate job (`coditect-issuer migrate`)", command) + write_yaml(doc)) + "\n"


def render_all(source: dict, params: dict[str, str]) -> dict[str, str]:
    c = substitute({k: v for k, v in source.items() if k not in ("about", "parameters")}, params)
    region = params["REGION"]
    return {"service.yaml": service_yaml(c, region), "migrate-job.yaml": job_yaml(c, region)}


# --------------------------------------------------------------------------
# --local: what a process outside Cloud Run needs to run like the container


def local(source: dict, params: dict[str, str], root: str | None) -> dict:
    c = substitute({k: v for k, v in source.items() if k not in ("about", "parameters")}, params)
    files = []
    moved: dict[str, str] = {}
    for f in c["files"]:
        path = f"{f['mount']}/{f['file']}"
        local_path = f"{root.rstrip('/')}{path}" if root else path
        moved[path] = local_path
        files.append({"path": local_path, "secret": f["secret"]})
    env = []
    for e in c["env"]:
        if "secret" in e:
            env.append({"name": e["name"], "secret": e["secret"]})
        else:
            env.append({"name": e["name"], "value": moved.get(e["value"], e["value"])})
    return {
        "args": c["service"]["args"],
        "migrate_args": c["migrate_job"]["args"],
        "port": c["service"]["port"],
        "env": env,
        "files": files,
    }


# --------------------------------------------------------------------------
# --check: the committed files, the Dockerfile and .env.example


def check_dockerfile(source: dict) -> list[str]:
    problems = []
    path = REPO / "Dockerfile"
    if not path.exists():
        return [f"{path} is missing"]
    text = path.read_text(encoding="utf-8")
    port = source["service"]["port"]
    args = source["service"]["args"]

    def instruction(name: str) -> list[str]:
        return [m.group(1).strip() for m in re.finditer(rf"(?m)^{name}\s+(.+)$", text)]

    entry = instruction("ENTRYPOINT")
    if entry != ['["coditect-issuer"]']:
        problems.append(f'Dockerfile: ENTRYPOINT should be ["coditect-issuer"], is {entry}')
    cmd = instruction("CMD")
    if cmd != [json.dumps(args)]:
        problems.append(f"Dockerfile: CMD should be {json.dumps(args)} (container.json service.args), is {cmd}")
    if instruction("EXPOSE") != [str(port)]:
        problems.append(f"Dockerfile: EXPOSE should be {port} (container.json service.port)")
    if not re.search(rf"(?m)^ENV\b[^\n]*(\\\n[^\n]*)*\bPORT={port}\b", text):
        problems.append(f"Dockerfile: ENV PORT={port} (container.json service.port) is missing")
    if not re.search(r"(?m)^ENV\b[^\n]*(\\\n[^\n]*)*\bCODITECT_ENV=production\b", text):
        problems.append("Dockerfile: ENV CODITECT_ENV=production is missing")
    if not re.search(r"(?m)^HEALTHCHECK\b[^\n]*(\\\n[^\n]*)*/readyz", text):
        problems.append("Dockerfile: the HEALTHCHECK should ask /readyz")
    return problems


def check_env_names(source: dict) -> list[str]:
    documented = set(re.findall(r"(?m)^([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(encoding="utf-8")))
    # NAME_FILE works for the settings the issuer reads with secret(env, "NAME").
    config = "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "issuer/src/config").glob("*.rs")))
    documented |= {f"{name}_FILE" for name in re.findall(r'secret\(env, "([A-Z][A-Z0-9_]*)"\)', config)}
    problems = []
    names = [e["name"] for e in source["env"]]
    for name in names:
        if name not in documented:
            problems.append(f"container.json: {name} is not a setting in .env.example")
    if "PORT" in names:
        problems.append("container.json: PORT is set by Cloud Run (service.port), not in env")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"container.json: set more than once: {', '.join(dupes)}")
    for e in source["env"]:
        if ("secret" in e) == ("value" in e):
            problems.append(f"container.json: {e['name']} needs exactly one of value and secret")
        if "secret" in e and f"{e['name']}_FILE" in names:
            problems.append(f"container.json: {e['name']} and {e['name']}_FILE are both set")
    mounted = {f"{f['mount']}/{f['file']}" for f in source["files"]}
    for e in source["env"]:
        if e["name"].endswith("_FILE") and e.get("value") not in mounted:
            problems.append(f"container.json: {e['name']} names no mounted file ({sorted(mounted)})")
    return problems


def check(source: dict) -> int:
    problems: list[str] = []
    rendered = render_all(source, parameters(source, {}, require_all=False))
    for name, text in rendered.items():
        path = HERE / name
        committed = path.read_text(encoding="utf-8") if path.exists() else ""
        if committed != text:
            diff = difflib.unified_diff(
                committed.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{name} (committed)",
                f"{name} (rendered from container.json)",
            )
            problems.append(f"{name} differs from what render.py renders:\n{''.join(diff)}")
    problems += check_dockerfile(source)
    problems += check_env_names(source)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print("run deploy/cloud-run/render.py to rewrite the manifests; fix the rest by hand", file=sys.stderr)
        return 1
    print(f"ok: {', '.join(OUTPUTS)} match container.json; Dockerfile and .env.example agree")
    return 0


# --------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare the committed files, change nothing")
    mode.add_argument("--out", metavar="DIR", help="render a deployment's manifests into DIR")
    mode.add_argument("--local", action="store_true", help="print args, env and files as JSON")
    ap.add_argument("--params", metavar="FILE", help="JSON object of parameter values")
    ap.add_argument("--set", metavar="NAME=VALUE", action="append", default=[], help="one parameter")
    ap.add_argument("--root", metavar="DIR", help="with --local: put the mounted files under DIR")
    a = ap.parse_args(argv)

    given: dict[str, str] = {}
    if a.params:
        with open(a.params, encoding="utf-8") as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise RenderError(f"{a.params}: must be a JSON object of strings")
        given.update(loaded)
    for item in a.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise RenderError(f"--set {item}: expected NAME=VALUE")
        given[name] = value
    if a.root and not a.local:
        raise RenderError("--root goes with --local")

    source = load_source()
    if a.check:
        if given:
            raise RenderError("--check compares the committed placeholder files; it takes no parameters")
        return check(source)
    if a.local:
        json.dump(local(source, parameters(source, given, require_all=False), a.root), sys.stdout, indent=2)
        print()
        return 0
    if a.out:
        out = Path(a.out)
        if out.resolve() == HERE:
            raise RenderError("--out must not be deploy/cloud-run: the committed files keep the placeholders")
        params = parameters(source, given, require_all=True)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in render_all(source, params).items():
            (out / name).write_text(text, encoding="utf-8")
            print(out / name)
        return 0
    if given:
        raise RenderError("parameters go with --out DIR or --local; the committed files keep the placeholders")
    for name, text in render_all(source, parameters(source, {}, require_all=False)).items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(HERE / name)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RenderError as e:
        print(f"render.py: {e}", file=sys.stderr)
        sys.exit(1)
