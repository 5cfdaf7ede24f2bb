#!/usr/bin/env bash
# make demo-app: a four-service application on three lab sites, wired only through ClusterLink
# imports and exports (docs/examples/bookinfo). Run from the repository root as root (the
# Makefile has already run: deps venv collection-path). The lab is DEMO_APP_LAB (default
# demo-app), created or reused; make demo-app-clean destroys it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
LAB=${DEMO_APP_LAB:-demo-app}
APP=docs/examples/bookinfo
SHOT=${DEMO_APP_SCREENSHOT:-docs/images/demo-app-fabric.png}
LABCMD=(python3 -m tests.lab)
STATE=${CLUSTERLINK_LAB_STATE:-/var/lib/clusterlink-lab}
INV="$STATE/$LAB/inventory.yml"
export ANSIBLE_COLLECTIONS_PATH="$REPO/.venv/collections"
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_PIPELINING=1
export PATH="$REPO/.venv/bin:$PATH"
PLAY=(ansible-playbook -i "$INV" -i "$APP/inventory")
N=9  # product page requests per step: three rounds of the three reviews versions
T0=$SECONDS

step() { printf '\n\033[1m==> [%3ds] %s\033[0m\n' "$((SECONDS - T0))" "$*"; }
show() { printf '    $ %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
on() { local h=$1; shift; "${LABCMD[@]}" ssh --name "$LAB" "$h" -- "$@"; }
indent() { sed 's/^/    /'; }
# a playbook run: its recap lines, or the end of its output and a failure
play() {
  local log
  log=$(mktemp)
  "${PLAY[@]}" "$@" >"$log" 2>&1 || { tail -n 60 "$log" >&2; rm -f "$log"; fail "ansible-playbook $*"; }
  grep -E '^[a-c] +:' "$log" | indent
  rm -f "$log"
}

# N product page requests on site a (a new connection each), one line per answer
pages() { on a "for i in \$(seq $N); do curl -sS -m 20 http://127.0.0.1:9080/ 2>&1 || echo 'ERROR curl'; done"; }
# the reviews versions@sites that answered, sorted and unique: "reviews-v1@b reviews-v2@b"
versions() { grep -o 'reviews: reviews-v[0-9]@[a-z]*' <<<"$1" | cut -d' ' -f2 | sort -u | xargs; }
answered() { [ "$(grep -c '^productpage@a ' <<<"$1")" = "$N" ]; }

[ "$(id -u)" = 0 ] || fail "make demo-app needs root (network namespaces, systemd-nspawn)"

step "1/10 Lab image (Debian bookworm with systemd and sshd; built once, then cached)"
show "python3 -m tests.lab image"
"${LABCMD[@]}" image >/dev/null

step "2/10 Three hosts, one site each: a (product page, ratings), b (details, reviews v1 and v2), c (reviews v3)"
show "python3 -m tests.lab create --name $LAB --hosts a,b,c"
"${LABCMD[@]}" create --name "$LAB" --hosts a,b,c >/dev/null \
  || fail "cannot create lab $LAB (another flat lab on the same subnet? python3 -m tests.lab list)"
"${LABCMD[@]}" status --name "$LAB"
A_ADDR=$("${LABCMD[@]}" status --name "$LAB" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["hosts"]["a"]["address"])')

step "3/10 The fabric with Ansible: exports, imports (bind: auto, the services' own port 9080) and policy from $APP/inventory"
show "ansible-playbook -i $INV -i $APP/inventory playbooks/site.yml"
play playbooks/site.yml

step "4/10 The application as systemd services (bookinfo.py, one unit per service)"
show "ansible-playbook -i $INV -i $APP/inventory $APP/playbook.yml"
play "$APP/playbook.yml"
for h in a b c; do
  echo "    $h: $(on $h systemctl list-units --plain --no-legend 'bookinfo-*' | awk '{print $1 " " $4}' | xargs)"
done

step "5/10 Names: the product page calls details and reviews by name; b and c call ratings by name"
# getent ahosts resolves as the services do (getaddrinfo: the /etc/hosts block kept by the gateway role)
resolve() { on "$1" getent ahostsv4 "$2.clusterlink.internal" 2>/dev/null | awk 'NR == 1 {print $1}'; }
show "python3 -m tests.lab ssh --name $LAB a -- getent ahostsv4 reviews.clusterlink.internal"
for _ in $(seq 30); do [ -n "$(resolve a reviews)" ] && break; sleep 1; done
for hn in a:details a:reviews b:ratings c:ratings; do
  addr=$(resolve "${hn%:*}" "${hn#*:}")
  echo "    on ${hn%:*}: ${hn#*:}.clusterlink.internal -> ${addr:-?}"
  [ -n "$addr" ] || fail "${hn%:*} does not resolve ${hn#*:}.clusterlink.internal"
done
show "python3 -m tests.lab ssh --name $LAB a -- gwctl get imports"
on a gwctl get imports | indent

step "6/10 Load balancing: $N product page requests on a; reviews round-robin over v1, v2 (site b) and v3 (site c)"
show "python3 -m tests.lab ssh --name $LAB a -- curl -s http://127.0.0.1:9080/   ($N times)"
for _ in $(seq 30); do
  out=$(pages)
  answered "$out" && [ "$(versions "$out")" = "reviews-v1@b reviews-v2@b reviews-v3@c" ] && break
  sleep 2
done
indent <<<"$out"
answered "$out" || fail "not every request was answered"
[ "$(versions "$out")" = "reviews-v1@b reviews-v2@b reviews-v3@c" ] \
  || fail "expected reviews v1@b, v2@b and v3@c, got: $(versions "$out")"
echo "    -> answered by: $(versions "$out")"

step "7/10 Policy: site c denies reviews v3 to site a ($APP/policy.yml, access_policy module); a's import hands the requests to v1 and v2"
show "ansible-playbook ... $APP/policy.yml"
play "$APP/policy.yml"
out=$(pages)
indent <<<"$out"
answered "$out" || fail "not every request was answered under the deny policy"
[ "$(versions "$out")" = "reviews-v1@b reviews-v2@b" ] \
  || fail "expected only reviews v1@b and v2@b under the deny policy, got: $(versions "$out")"
echo "    -> answered by: $(versions "$out")  (v3 refused by c's policy)"
show "python3 -m tests.lab ssh --name $LAB a -- gwctl explain --peer c --export reviews-v3"
on a gwctl explain --peer c --export reviews-v3 | indent

step "8/10 The fabric page of site a while it runs: http://$A_ADDR:9469/fabric (headless Chromium -> $SHOT)"
show ".venv/bin/python demo/fabric_screenshot.py http://$A_ADDR:9469/fabric $SHOT --nodes 3"
mkdir -p "$(dirname "$SHOT")"
python demo/fabric_screenshot.py "http://$A_ADDR:9469/fabric?interval=500" "$SHOT" --nodes 3 \
  | indent || fail "no screenshot of the fabric page"

step "9/10 Allow again (the deny removed): v3 answers again"
show "ansible-playbook ... $APP/policy.yml -e bookinfo_deny_state=absent"
play "$APP/policy.yml" -e bookinfo_deny_state=absent
out=$(pages)
echo "    -> answered by: $(versions "$out")"
[ "$(versions "$out")" = "reviews-v1@b reviews-v2@b reviews-v3@c" ] || fail "v3 did not come back"

step "10/10 Failover: site c's gateway stops; every request is still answered, from site b"
show "python3 -m tests.lab ssh --name $LAB c -- systemctl stop clusterlink-gateway"
on c systemctl stop clusterlink-gateway
out=$(pages)
indent <<<"$out"
answered "$out" || fail "requests failed while c's gateway was stopped"
[ "$(versions "$out")" = "reviews-v1@b reviews-v2@b" ] \
  || fail "expected only reviews from b while c is down, got: $(versions "$out")"
echo "    -> answered by: $(versions "$out")"
show "python3 -m tests.lab ssh --name $LAB c -- systemctl start clusterlink-gateway"
on c systemctl start clusterlink-gateway
for _ in $(seq 60); do
  out=$(pages)
  [ "$(versions "$out")" = "reviews-v1@b reviews-v2@b reviews-v3@c" ] && break
  sleep 2
done
echo "    -> c is back: $(versions "$out")"
[ "$(versions "$out")" = "reviews-v1@b reviews-v2@b reviews-v3@c" ] || fail "c did not come back"

cat <<MSG

Demo done in $((SECONDS - T0)) s. The lab keeps running; look around:
  python3 -m tests.lab ssh --name $LAB a -- curl -s http://127.0.0.1:9080/       # the product page
  python3 -m tests.lab ssh --name $LAB a -- curl -s http://127.0.0.1:9080/api    # ... as JSON
  python3 -m tests.lab ssh --name $LAB a -- gwctl status
  http://$A_ADDR:9469/fabric  (site a's fabric page, from this machine)
Destroy it:  make demo-app-clean
MSG
