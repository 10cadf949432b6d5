#!/usr/bin/env python3
"""Checks docker-compose.yml and deploy/ without a Docker engine.

There is no Docker engine (nor compose plugin) on the machines the tests run
on, so this checks what can be checked from the files: the compose file is
YAML with the structure compose expects; every Dockerfile, config file and
mounted path it names exists; every host that deploy/nginx.conf and
deploy/prometheus.yml name is a compose service; every Swarmcast service's
arguments are accepted by the real binary (`--help` after them parses them
without running the service); the Grafana dashboard is JSON whose panels
query metrics the services export. Run by scripts/test.sh; prints what it
checked, exits 1 on the first mismatch.
"""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SWARMCAST_BIN_DIR", os.path.join(ROOT, "target", "debug"))
errors = []


def fail(msg):
    errors.append(msg)
    print("check-deploy: " + msg, file=sys.stderr)


compose = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
services = compose.get("services")
if not isinstance(services, dict) or not services:
    fail("docker-compose.yml has no services")
    sys.exit(1)
known_keys = {"build", "image", "command", "entrypoint", "environment", "volumes", "ports",
              "depends_on", "healthcheck", "restart", "user"}
named_volumes = set((compose.get("volumes") or {}).keys())
binary_of = {"origin.Dockerfile": "swarmcast-origin", "tracker.Dockerfile": "swarmcast-tracker",
             "edge.Dockerfile": "swarmcast-edge"}

for name, svc in services.items():
    unknown = set(svc) - known_keys
    if unknown:
        fail(f"service {name}: unknown keys {sorted(unknown)}")
    if ("build" in svc) == ("image" in svc):
        fail(f"service {name}: needs exactly one of build and image")
    if "build" in svc:
        df = os.path.join(ROOT, svc["build"].get("context", "."), svc["build"]["dockerfile"])
        if not os.path.isfile(df):
            fail(f"service {name}: {df} is missing")
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            if not os.path.exists(os.path.join(ROOT, src)):
                fail(f"service {name}: mounts {src}, which is missing")
        elif src not in named_volumes:
            fail(f"service {name}: volume {src} is not declared")
    deps = svc.get("depends_on", [])
    for d in deps if isinstance(deps, list) else deps.keys():
        if d not in services:
            fail(f"service {name}: depends on unknown service {d}")
    # A Swarmcast service started by its image's entrypoint: its arguments
    # must parse (clap parses them all before acting on --help).
    df_name = os.path.basename(svc.get("build", {}).get("dockerfile", ""))
    binary = binary_of.get(df_name)
    if binary and "entrypoint" not in svc:
        args = svc.get("command", [])
        env = dict(os.environ)
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()
                    if not str(v).startswith("${")})
        env["SWARMCAST_TOKEN_SECRET"] = "check-deploy-secret-0123456789"
        exe = os.path.join(BIN, binary)
        if not os.path.exists(exe):
            fail(f"{exe} is not built (cargo build --workspace --bins)")
            continue
        r = subprocess.run([exe] + args + ["--help"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            fail(f"service {name}: {binary} refuses its arguments: {r.stderr.strip()[:300]}")
        else:
            print(f"check-deploy: {name}: {binary} {' '.join(args)} parses")

# nginx.conf and prometheus.yml name compose services only.
nginx = open(os.path.join(ROOT, "deploy", "nginx.conf")).read()
for host in re.findall(r"^\s*server\s+([a-z0-9-]+):\d+", nginx, re.M):
    if host not in services:
        fail(f"deploy/nginx.conf names {host}, not a compose service")
prom = yaml.safe_load(open(os.path.join(ROOT, "deploy", "prometheus.yml")))
for job in prom["scrape_configs"]:
    for sc in job["static_configs"]:
        for t in sc["targets"]:
            if t.split(":")[0] not in services:
                fail(f"deploy/prometheus.yml scrapes {t}, not a compose service")

# The dashboard's queries name metrics the code exports.
dash = json.load(open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "swarmcast.json")))
sources = ""
for d in ("tracker/src", "origin/src", "edge-peer/src", "svc/src"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, d)):
        for f in files:
            if f.endswith(".rs"):
                sources += open(os.path.join(dirpath, f)).read()
for p in dash["panels"]:
    for t in p["targets"]:
        for m in re.findall(r"swarmcast_[a-z0-9_]+", t["expr"]):
            if f'"{m}"' not in sources:
                fail(f"dashboard panel {p['title']!r} queries {m}, which no service exports")

if errors:
    sys.exit(1)
print(f"check-deploy: {len(services)} compose services, nginx.conf, prometheus.yml and the dashboard agree")
