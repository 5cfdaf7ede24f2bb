# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Screenshot of a gateway's live fabric page in headless Chromium (make demo-app).

    .venv/bin/python demo/fabric_screenshot.py URL OUT.png [--nodes N] [--refusals]

Waits (up to --timeout seconds) until the page has drawn N site nodes, one row per import and
export, and (with --refusals) a refused connection, then saves OUT.png. Debian's chromium and
chromium-driver, driven by Selenium from the venv; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

STATE = """
return {
  nodes: document.querySelectorAll("#graph g.node").length,
  imports: document.querySelectorAll("#imports tbody tr[data-import]").length,
  exports: document.querySelectorAll("#exports tbody tr[data-export]").length,
  refusals: document.querySelectorAll("#refusals tbody tr[data-side]").length,
  status: (document.getElementById("status") || {}).textContent,
};
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--refusals", action="store_true")
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        print("chromium and chromium-driver are not installed (make deps)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        options = Options()
        options.binary_location = binary
        for arg in (
            "--headless=new",
            "--no-sandbox",  # run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,1000",
            f"--user-data-dir={tmp}/chromium",
        ):
            options.add_argument(arg)
        drv = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        try:
            drv.set_page_load_timeout(30)
            drv.get(args.url)
            deadline = time.monotonic() + args.timeout
            while True:
                state = drv.execute_script(STATE)
                ready = (
                    state["nodes"] >= args.nodes
                    and state["imports"] + state["exports"] > 0
                    and (state["refusals"] > 0 or not args.refusals)
                )
                if ready:
                    break
                if time.monotonic() > deadline:
                    print(f"the page did not draw the fabric: {state}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            time.sleep(1)  # one more poll: the edges' RTT labels
            drv.save_screenshot(args.out)
            print(
                f"{args.out}: {state['nodes']} sites, {state['imports']} imports, "
                f"{state['exports']} exports, {state['refusals']} refusals ({state['status']})"
            )
        finally:
            drv.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
