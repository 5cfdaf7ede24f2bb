#!/usr/bin/env bash
# make demo: sites on this machine, connected by ClusterLink, deployed with Ansible.
# Run from the repository root as root (the Makefile has already run: deps venv collection-path).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
LAB=demo
LABCMD=(python3 -m tests.lab)
STATE=${CLUSTERLINK_LAB_STATE:-/var/lib/clusterlink-lab}
INV="$STATE/$LAB/ours.yml"  # written in step 2: the lab's hosts but c
GWCTL=gwctl  # linked onto the PATH by the gateway role
export ANSIBLE_COLLECTIONS_PATH="$REPO/.venv/collections"
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_PIPELINING=1
export PATH="$REPO/.venv/bin:$PATH"
PLAY=(ansible-playbook -i "$INV" -i "$REPO/inventories/lab")
T0=$SECONDS

step() { printf '\n\033[1m==> [%3ds] %s\033[0m\n' "$((SECONDS - T0))" "$*"; }
show() { printf '    $ %s\n' "$*"; }
# page HOST PORT WANT WHY: curl http://127.0.0.1:PORT/ on lab host HOST until it answers WANT
# (60 s), print the answer; fail the demo with WHY if it never does.
page() {
  local ok=""
  for _ in $(seq 60); do
    if out=$("${LABCMD[@]}" ssh --name "$LAB" "$1" -- curl -sS -m 5 "http://127.0.0.1:$2/" 2>&1) \
      && [ "$out" = "$3" ]; then ok=1; break; fi
    sleep 1
  done
  echo "    $1 got: ${out:-}"
  [ -n "$ok" ] || { echo "FAILED: $4" >&2; exit 1; }
}

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, systemd-nspawn)" >&2; exit 1; }

# Only one flat lab (198.18.0.0/24) can exist at a time.
other=$("${LABCMD[@]}" list --json | python3 -c '
import json, sys
print(" ".join(n for n, st in json.load(sys.stdin).items()
               if n != sys.argv[1] and st.get("topology") == "flat"))' "$LAB")
if [ -n "$other" ]; then
  echo "another flat lab exists ($other); only one can use 198.18.0.0/24." >&2
  echo "Destroy it first: python3 -m tests.lab destroy --name <name>" >&2
  exit 1
fi

step "1/13 Lab image (Debian bookworm with systemd and sshd; built once, ~80 s, then cached)"
show "python3 -m tests.lab image"
"${LABCMD[@]}" image

step "2/13 Four hosts, a (198.18.0.10), b (.11), c (.12) and d (.13): a and b are our fabric; c belongs to another team (step 12); d joins us later (step 13)"
show "python3 -m tests.lab create --name $LAB --hosts a,b,c,d"
"${LABCMD[@]}" create --name "$LAB" --hosts a,b,c,d >/dev/null
"${LABCMD[@]}" status --name "$LAB"
# Our inventory names a and b only: c is the other team's host, in their inventory (step 12);
# d comes in step 13 (its own inventory file, next to this one).
python3 - "$STATE/$LAB/inventory.yml" "$INV" <<'PY'
import sys
import yaml
src, dst = sys.argv[1:]
inv = yaml.safe_load(open(src))
hosts = inv["all"]["children"]["clusterlink_gateways"]["hosts"]
later = {"clusterlink_gateways": {"hosts": {"d": hosts.pop("d")}}}
hosts.pop("c")
with open(dst, "w") as f:
    f.write("# make demo: the lab's inventory without c (another team's host) and d (step 13)\n")
    yaml.safe_dump(inv, f, sort_keys=False)
with open(dst.replace("ours.yml", "site-d.yml"), "w") as f:
    f.write("# make demo, step 13: site d joins our fabric\n")
    yaml.safe_dump(later, f, sort_keys=False)
PY

step "3/13 Deploy with Ansible: CA, certificates, gateway service, peers, export 'web' on b, import 'web' on a (port 8080), policy allow-lab-sites"
show "ansible-playbook -i $INV -i inventories/lab playbooks/site.yml"
"${PLAY[@]}" playbooks/site.yml

step "4/13 A web server on b, listening on 127.0.0.1:8080 only (not reachable from a directly)"
show "ansible-playbook ... demo/web.yml   (systemd-run --unit=demo-web python3 -m http.server 8080 --bind 127.0.0.1)"
"${PLAY[@]}" demo/web.yml

curl_a() { "${LABCMD[@]}" ssh --name "$LAB" a -- curl -sS -m 5 http://127.0.0.1:8080/ 2>&1; }

step "5/13 From a: curl http://127.0.0.1:8080/ (a's import) -> gateway a -> mTLS -> gateway b -> b's web server"
show "python3 -m tests.lab ssh --name $LAB a -- curl -sS http://127.0.0.1:8080/"
page a 8080 "hello from site b" "site a did not reach site b"

step "6/13 Policy change through Ansible: deny site a on b (access_policy module, demo/policy.yml)"
show "ansible-playbook ... demo/policy.yml -e demo_policy_state=present"
"${PLAY[@]}" demo/policy.yml -e demo_policy_state=present
set +e; out=$(curl_a); rc=$?; set -e
echo "    a got (curl exit $rc): $out"
if [ "$rc" = 0 ]; then echo "FAILED: the deny policy did not stop the connection" >&2; exit 1; fi

step "7/13 Allow again: remove the deny policy with Ansible"
show "ansible-playbook ... demo/policy.yml -e demo_policy_state=absent"
"${PLAY[@]}" demo/policy.yml -e demo_policy_state=absent
out=$(curl_a) || true
echo "    a got: $out"
[ "$out" = "hello from site b" ] || { echo "FAILED: access not restored" >&2; exit 1; }

step "8/13 A second controller without the fabric CA (a colleague's laptop) runs site.yml: refused before any change"
EMPTY_PKI=$(mktemp -d)
show "ansible-playbook ... playbooks/site.yml -e clusterlink_pki_dir=$EMPTY_PKI/pki   (no CA there)"
set +e; out=$("${PLAY[@]}" playbooks/site.yml -e "clusterlink_pki_dir=$EMPTY_PKI/pki" 2>&1); rc=$?; set -e
rm -rf "$EMPTY_PKI"
echo "$out" | grep -o 'Refusing to start a new fabric[^"]*' | head -1 | fold -s -w 92 | sed 's/^/    /'
if [ "$rc" = 0 ]; then echo "FAILED: a controller without the CA was not refused" >&2; exit 1; fi
out=$(curl_a) || true
echo "    a still gets: $out"
[ "$out" = "hello from site b" ] || { echo "FAILED: traffic broke" >&2; exit 1; }

step "9/13 What a gateway knows: peers, imports, and when its certificate and the fabric CA expire"
show "python3 -m tests.lab ssh --name $LAB a -- $GWCTL status"
"${LABCMD[@]}" ssh --name "$LAB" a -- "$GWCTL" status | sed 's/^/    /'

step "10/13 Back up every gateway to the controller (backup.yml): its objects and allocated import ports, no secrets"
BACKUP="$STATE/$LAB/backup"
show "ansible-playbook ... playbooks/backup.yml -e clusterlink_backup_dir=$BACKUP"
"${PLAY[@]}" playbooks/backup.yml -e "clusterlink_backup_dir=$BACKUP" >/dev/null
ls -l "$BACKUP" | tail -n +2 | sed 's/^/    /'
awk '/^kind: Import/{p=1} /^---/{p=0} p' "$BACKUP/a.yaml" | sed 's/^/    /'
echo "    (a rebuilt host gets them back: playbooks/site.yml -e clusterlink_restore_from=$BACKUP --limit a)"

step "11/13 b becomes an outbound-only site: a firewall drops every new connection to its peer port; the inventory says clusterlink_inbound: false for b; site.yml makes b a 'dial: false' peer on a, and a reaches b over the reverse links b opens"
show "nft add rule bridge clusterlink_demo_outbound forward ip daddr 198.18.0.11 tcp dport 443 tcp flags & (syn|ack) == syn drop"
nft delete table bridge clusterlink_demo_outbound 2>/dev/null || true
nft -f - <<'NFT'
table bridge clusterlink_demo_outbound {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip daddr 198.18.0.11 tcp dport 443 tcp flags & (syn | ack) == syn counter drop
  }
}
NFT
OUTBOUND="$STATE/$LAB/outbound-only.yml"
printf 'clusterlink_gateways:\n  hosts:\n    b:\n      clusterlink_inbound: false\n' > "$OUTBOUND"
show "ansible-playbook -i $INV -i inventories/lab -i $OUTBOUND playbooks/site.yml"
"${PLAY[@]}" -i "$OUTBOUND" playbooks/site.yml >/dev/null
out=$(curl_a) || true
echo "    a got: $out"
[ "$out" = "hello from site b" ] || { echo "FAILED: a did not reach the outbound-only site b" >&2; exit 1; }
show "python3 -m tests.lab ssh --name $LAB a -- $GWCTL get peers"
"${LABCMD[@]}" ssh --name "$LAB" a -- "$GWCTL" get peers | sed 's/^/    /'
dropped=$(nft list table bridge clusterlink_demo_outbound | grep -o 'packets [0-9]*' | head -1)
echo "    connections to b's peer port dropped by the firewall: ${dropped:-packets 0}"

step "12/13 Another team runs c with its own controller, inventory and CA; a grant from a's operator peers a and c without sharing a key or an inventory"
TEAM="$STATE/$LAB/team-c"
rm -rf "$TEAM" && mkdir -p "$TEAM/home" && chmod 700 "$TEAM"
python3 - "$STATE/$LAB/inventory.yml" "$TEAM/inventory.yml" <<'PY'
import os
import sys
import yaml
src, dst = sys.argv[1:]
hosts = yaml.safe_load(open(src))["all"]["children"]["clusterlink_gateways"]["hosts"]
group = {
    "hosts": {"c": hosts["c"]},
    "vars": {
        "clusterlink_fabric_name": "team-c",  # their own CA, under their controller's HOME
        "clusterlink_log_format": "text",
        "clusterlink_gateway_wheel_cache": os.path.expanduser("~/.cache/clusterlink/wheelhouse"),
        "clusterlink_exports": [{"name": "web", "host": "127.0.0.1", "port": 8080, "allowed_peers": ["a"]}],
        "clusterlink_policies": [{"name": "allow-all", "action": "allow"}],
    },
}
with open(dst, "w") as f:
    f.write("# make demo: the other team's inventory (names c only; exports web to a)\n")
    yaml.safe_dump({"all": {"children": {"clusterlink_gateways": group}}}, f, sort_keys=False)
PY
THEIRS=(env HOME="$TEAM/home" ansible-playbook -i "$TEAM/inventory.yml")
show "HOME=$TEAM/home ansible-playbook -i $TEAM/inventory.yml playbooks/site.yml   (their controller; CA 'team-c')"
"${THEIRS[@]}" playbooks/site.yml >/dev/null
"${THEIRS[@]}" demo/web.yml -e demo_web_host=c >/dev/null
show "python3 -m tests.lab ssh --name $LAB a -- $GWCTL grant create --peer-name c --endpoint 198.18.0.10:443 --expires 1h --uses 1"
grant=$("${LABCMD[@]}" ssh --name "$LAB" a -- "$GWCTL" grant create --peer-name c --endpoint 198.18.0.10:443 --expires 1h --uses 1 | grep '^clusterlink-grant:')
echo "    ${grant:0:64}... (${#grant} characters: a's name, endpoint and CA certificate, a one-time secret; no private key)"
(umask 077 && printf '%s\n' "$grant" > "$TEAM/grant-from-a.txt")
show "HOME=$TEAM/home ansible-playbook -i $TEAM/inventory.yml demo/redeem.yml -e grant_file=$TEAM/grant-from-a.txt"
"${THEIRS[@]}" demo/redeem.yml -e "grant_file=$TEAM/grant-from-a.txt" | grep -E '^c +:' | sed 's/^/    /'
IMPORT_C="$STATE/$LAB/import-team-c.yml"
cat > "$IMPORT_C" <<'YAML'
# make demo: a also imports the other team's export "web" (c decides who may see it, a what it
# imports). Extra vars, as inventories/lab/host_vars/a.yml would otherwise win.
demo_imports:
  a:
    - {name: web, port: 8080, sources: [{peer: b, export: web}]}
    - {name: team-c-web, port: 8081, sources: [{peer: c, export: web}]}
clusterlink_imports: "{{ demo_imports[inventory_hostname] | default([]) }}"
YAML
show "ansible-playbook -i $INV -i inventories/lab -i $OUTBOUND -e @$IMPORT_C playbooks/site.yml   (our inventory never names c's host)"
"${PLAY[@]}" -i "$OUTBOUND" -e "@$IMPORT_C" playbooks/site.yml >/dev/null
show "python3 -m tests.lab ssh --name $LAB a -- curl -sS http://127.0.0.1:8081/"
page a 8081 "hello from site c" "a did not reach the other team's site c"
show "python3 -m tests.lab ssh --name $LAB a -- $GWCTL get peers"
"${LABCMD[@]}" ssh --name "$LAB" a -- "$GWCTL" get peers | sed 's/^/    /'
echo "    (Peer c trusts only team-c's CA: a certificate from it naming a or b is refused; a deletes Peer c and c's links close)"

step "13/13 d, a new outbound-only site, uses b's web although b is outbound-only too: a becomes a relay (clusterlink_relay: true, clusterlink_relays: [a]) and splices their streams; d and b run their own mTLS inside, so a sees only ciphertext"
show "nft add rule bridge clusterlink_demo_outbound forward ip daddr 198.18.0.13 tcp dport 443 tcp flags & (syn|ack) == syn drop"
nft add rule bridge clusterlink_demo_outbound forward ip daddr 198.18.0.13 tcp dport 443 'tcp flags & (syn | ack) == syn' counter drop
RELAYS="$STATE/$LAB/relays.yml"
cat > "$RELAYS" <<'YAML'
# make demo, step 13: a is a relay; d (like b) is outbound-only; outbound-only pairs go via a
clusterlink_gateways:
  vars:
    clusterlink_relays: [a]
  hosts:
    a:
      clusterlink_relay: true
    d:
      clusterlink_inbound: false
YAML
IMPORT_D="$STATE/$LAB/import-d.yml"
cat > "$IMPORT_D" <<'YAML'
# make demo: step 12's imports on a, and d imports b's web
demo_imports:
  a:
    - {name: web, port: 8080, sources: [{peer: b, export: web}]}
    - {name: team-c-web, port: 8081, sources: [{peer: c, export: web}]}
  d:
    - {name: web, port: 8080, sources: [{peer: b, export: web}]}
clusterlink_imports: "{{ demo_imports[inventory_hostname] | default([]) }}"
YAML
show "ansible-playbook -i $INV -i $STATE/$LAB/site-d.yml -i inventories/lab -i $OUTBOUND -i $RELAYS -e @$IMPORT_D playbooks/site.yml"
"${PLAY[@]}" -i "$STATE/$LAB/site-d.yml" -i "$OUTBOUND" -i "$RELAYS" -e "@$IMPORT_D" playbooks/site.yml >/dev/null
show "python3 -m tests.lab ssh --name $LAB d -- curl -sS http://127.0.0.1:8080/"
page d 8080 "hello from site b" "d did not reach b through the relay a"
show "python3 -m tests.lab ssh --name $LAB d -- $GWCTL get peers"
"${LABCMD[@]}" ssh --name "$LAB" d -- "$GWCTL" get peers | sed 's/^/    /'
show "python3 -m tests.lab ssh --name $LAB a -- curl -s --unix-socket /run/clusterlink/admin.sock http://a/metrics | grep -E '^clusterlink_relay_(streams|bytes)_total'   (the relay counts streams and bytes, reads none)"
"${LABCMD[@]}" ssh --name "$LAB" a -- curl -s --unix-socket /run/clusterlink/admin.sock http://a/metrics \
  | grep -E '^clusterlink_relay_(streams|bytes)_total' | grep -v 'destination="-"' | sed 's/^/    /' || true

cat <<MSG

Demo done in $((SECONDS - T0)) s. The lab keeps running; look around:
  python3 -m tests.lab ssh --name $LAB a -- $GWCTL status       # peers, imports, policies (also b)
  python3 -m tests.lab ssh --name $LAB b -- journalctl -u clusterlink-gateway -n 50
  python3 -m tests.lab ssh --name $LAB a -- curl -s http://127.0.0.1:8080/
  ANSIBLE_COLLECTIONS_PATH=.venv/collections .venv/bin/ansible-playbook -i $INV -i inventories/lab playbooks/status.yml
Destroy it:  make demo-clean
MSG
