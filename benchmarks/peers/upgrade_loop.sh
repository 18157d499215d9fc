#!/usr/bin/env bash
# The bare peer of benchmarks/rollout.py: the documented runbook as a shell loop. For each Engine:
# docker stop, docker rm, docker run of the new image with the same arguments (volume, port, environment,
# labels, restart policy, read from the old container before it stops), then curl /health until it says ok.
#
#   benchmarks/peers/upgrade_loop.sh TARGET_VERSION < batches
#
# Each line of standard input is one batch: "container:port:volume" words. The Engines of a batch are
# upgraded side by side; the next batch starts once every one of them is healthy. Exit 1 if any was not.
set -u
target=${1:?usage: upgrade_loop.sh TARGET_VERSION < batches}
health_timeout=${HEALTH_TIMEOUT:-120}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

upgrade_one() {
    local name=$1 port=$2 volume=$3 image
    image=$(docker inspect --format '{{.Config.Image}}' "$name") || return 1
    image="${image%:*}:$target"
    docker inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$name" >"$work/$name.env" || return 1
    docker inspect --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{println}}{{end}}' "$name" \
        >"$work/$name.labels" || return 1
    docker stop --time 30 "$name" >/dev/null || return 1
    docker rm "$name" >/dev/null || return 1
    docker run --detach --name "$name" --env-file "$work/$name.env" --label-file "$work/$name.labels" \
        --volume "$volume:/data" --publish "127.0.0.1:$port:8000" --restart unless-stopped "$image" >/dev/null \
        || return 1
    local deadline=$((SECONDS + health_timeout))
    until curl --silent --max-time 2 "http://127.0.0.1:$port/health" | grep -q '"status": *"ok"'; do
        if ((SECONDS > deadline)); then
            echo "$name: /health not ok after ${health_timeout}s" >&2
            return 1
        fi
        sleep 0.1
    done
}

failed=0
while read -r -a batch; do
    pids=()
    for engine in "${batch[@]}"; do
        IFS=: read -r name port volume <<<"$engine"
        upgrade_one "$name" "$port" "$volume" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    if ((failed)); then
        echo "a batch failed; stopping" >&2
        exit 1
    fi
done
