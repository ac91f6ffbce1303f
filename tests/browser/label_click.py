"""Drives mnpflow's analysts' page in headless chromium (Debian's chromium, chromium-driver and
python3-selenium), as an analyst would and as other web sites open in the same browser would.

1. Opens the URL the sensor printed (with its token): the page trades the token for an
   HttpOnly, SameSite=Strict cookie and drops it from the address bar; the page then loads
   its alerts with the cookie alone.
2. For each --attacker origin (pages another test server serves, in this same browser, with
   the analyst's cookie in the jar): fetch.html sends a `no-cors` POST of a "benign" label
   and form.html auto-submits one as a form; prints what the browser got.
3. With --rebind NAME (mapped to 127.0.0.1 by chromium's resolver, as DNS rebinding would):
   opens the page under that name, token and all, and prints the answer.
4. Back on the page: opens the first incident, clicks "attack" on its first alert and waits
   until the page shows the label stored.
5. With --incident TEXT: types its first word (the source) in the filter, finds the incident
   whose addresses read TEXT (the demo's SSH brute force, `203.0.113.9 -> 10.0.1.22`), clicks its "attack" (one click for all its flows) and
   waits until the page shows it labeled, by whom and when.
6. Filters: "unlabeled" hides that incident, "attack" shows it.
7. Undo: the incident's flows go back to unlabeled.

Between steps 1 and 2, the pictures: fetches GET /api/summary in the page and waits until
the SVG elements carry its numbers (timeline bars' alert counts, histogram bins' counts, the
threshold line's value, the top sources' and destinations' bars); prints what they carry.
With --screenshot PATH, saves a 1280-pixel-wide picture of the page at the end (filter
cleared, all incidents).

Prints one line per step (`cookie ...`, `address ...`, `fetch ORIGIN: ...`, `form ORIGIN:
...`, `rebound: ...`, `labeled UID`, `incident ID FLOWS: STATE`, `filter STATE: shown|hidden`,
`undone ID: STATE`, `pictures {JSON}`); the Rust test checks them, the sensor's log and the
label store. Usage: label_click.py URL [--attacker ORIGIN]... [--rebind NAME] [--incident TEXT]
[--screenshot PATH]"""

import argparse
import json
import sys
import time
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("--attacker", action="append", default=[])
ap.add_argument("--rebind")
ap.add_argument("--incident")
ap.add_argument("--screenshot")
args = ap.parse_args()
page = urlsplit(args.url)
base = "%s://%s/" % (page.scheme, page.netloc)

opts = Options()
opts.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
    opts.add_argument(arg)
# Test names resolve to loopback: an attacker's site on another port, and a rebound name.
names = [urlsplit(o).hostname for o in args.attacker] + ([args.rebind] if args.rebind else [])
rules = ",".join("MAP %s 127.0.0.1" % n for n in names if n not in ("127.0.0.1", "localhost"))
if rules:
    opts.add_argument("--host-resolver-rules=" + rules)
# The console, to see that the page breaks none of its own Content-Security-Policy.
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 30, ignored_exceptions=[StaleElementReferenceException])


def body_text():
    return driver.find_element(By.TAG_NAME, "body").text.strip().replace("\n", " ")


def alerts_loaded():
    try:
        return wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#incidents tr.incident") or False)
    except Exception:
        sys.exit("no alerts listed at %s; the page says: %s" % (driver.current_url, body_text()))


def pictures():
    """What the page's SVG pictures carry, as numbers, beside what /api/summary says."""
    api = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/summary?bins=30&top=10').then(r => r.json()).then(done, e => done({error: String(e)}));"
    )
    if "error" in api:
        sys.exit("GET /api/summary in the page: %s" % api["error"])

    def counts(css):
        return [int(e.get_attribute("data-count")) for e in driver.find_elements(By.CSS_SELECTOR, css)]

    def talkers(svg):
        return [
            [e.get_attribute("data-addr"), int(e.get_attribute("data-count"))]
            for e in driver.find_elements(By.CSS_SELECTOR, "#%s g.talker" % svg)
        ]

    line = driver.find_elements(By.CSS_SELECTOR, "#scores line.threshold")
    target = driver.find_elements(By.CSS_SELECTOR, "#timeline line.target")
    drawn = {
        "bars": counts("#timeline rect.bar"),
        "bins": counts("#scores rect.bin"),
        "threshold": float(line[0].get_attribute("data-threshold")) if line else None,
        "target_rate": float(target[0].get_attribute("data-rate")) if target else None,
        "sources": talkers("sources"),
        "destinations": talkers("destinations"),
    }
    want = {
        "bars": [b["alerts"] for b in api["timeline"]["buckets"]],
        "bins": [b["count"] for b in api["scores"]["bins"]],
        "threshold": api["threshold"],
        "target_rate": api["target_rate"] and api["target_rate"]["rate"],
        "sources": [[t["addr"], t["alerts"]] for t in api["top_sources"]],
        "destinations": [[t["addr"], t["alerts"]] for t in api["top_destinations"]],
    }
    return drawn, want, api


def pictures_match(d):
    try:
        drawn, want, api = pictures()
    except StaleElementReferenceException:
        return False
    return (drawn, api) if drawn == want else False


try:
    # 1. The printed URL: cookie, token out of the address bar, alerts listed.
    driver.get(args.url)
    alerts_loaded()
    cookie = driver.get_cookie("mnpflow_token_%d" % page.port)
    if cookie is None:
        sys.exit("no token cookie after opening the printed URL: %s" % driver.get_cookies())
    print("cookie %s httpOnly=%s sameSite=%s" % (cookie["name"], cookie.get("httpOnly"), cookie.get("sameSite")))
    print("address %s" % driver.current_url)
    if driver.execute_script("return document.cookie") != "":
        sys.exit("the page's script can read the token cookie")
    driver.get(base)
    alerts_loaded()
    print("reloaded without the token")

    # The pictures carry the numbers of /api/summary.
    try:
        drawn, api = WebDriverWait(driver, 15).until(pictures_match)
    except Exception:
        drawn, want, _ = pictures()
        sys.exit("the pictures do not carry the API's numbers:\n drawn %s\n api   %s" % (drawn, want))
    print("pictures " + json.dumps({
        "alerts": sum(drawn["bars"]),
        "bars": len(drawn["bars"]),
        "flows": sum(drawn["bins"]),
        "bins": len(drawn["bins"]),
        "threshold": drawn["threshold"],
        "target_rate": drawn["target_rate"],
        "sources": drawn["sources"],
        "destinations": drawn["destinations"],
        "api_alerts": api["timeline"]["alerts"],
        "api_flows": api["scores"]["flows"],
    }))
    refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    if refused:
        sys.exit("the page breaks its Content-Security-Policy: %s" % refused)
    print("no CSP violation")

    # 2. Other origins, in the same browser, try to store labels.
    for origin in args.attacker:
        driver.get(origin + "/fetch.html")
        title = wait.until(lambda d: d.title if d.title.startswith(("sent", "failed")) else False)
        print("fetch %s: %s" % (origin, title))
        driver.get(origin + "/form.html")
        wait.until(lambda d: d.current_url.startswith(base))
        print("form %s: %s" % (origin, body_text()))

    # 3. A rebound name: the browser sends it as Host, even with the token.
    if args.rebind:
        driver.get("http://%s:%d/?%s" % (args.rebind, page.port, page.query))
        print("rebound: %s" % body_text())

    # 4. The analyst labels one alert with a click.
    driver.get(base)
    alerts_loaded()[0].find_element(By.CSS_SELECTOR, "button.expand").click()
    row = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#incidents tr.member[data-uid]") or False)[0]
    uid = row.get_attribute("data-uid")
    row.find_element(By.CSS_SELECTOR, "button.label-attack").click()
    selector = '#incidents tr.member[data-uid="%s"]' % uid
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).get_attribute("class") == "member attack")
    status = driver.find_element(By.ID, "status").text
    if not status.startswith("labeled " + uid):
        sys.exit("the page says: " + status)
    print("labeled", uid)

    if args.incident:
        # 5. One click labels a whole incident.
        def incident_id(d):
            # Rows are redrawn as the filter changes: a row may go stale while read.
            try:
                for r in d.find_elements(By.CSS_SELECTOR, "#incidents tr.incident"):
                    if args.incident in r.text:
                        return r.get_attribute("data-incident")
            except StaleElementReferenceException:
                pass
            return False

        # The analyst narrows the page to the source first.
        driver.find_element(By.ID, "filter").send_keys(args.incident.split()[0])
        iid = wait.until(incident_id)
        time.sleep(1.0)
        sel = '#incidents tr.incident[data-incident="%s"]' % iid
        row = driver.find_element(By.CSS_SELECTOR, sel)
        flows = row.find_element(By.CSS_SELECTOR, "td.flows").text.split()[0]
        row.find_element(By.CSS_SELECTOR, "button.label-attack").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, sel).get_attribute("class") == "incident attack")
        status = driver.find_element(By.ID, "status").text
        if not status.startswith("labeled incident %s as attack" % iid):
            sys.exit("the page says: " + status)
        state = driver.find_element(By.CSS_SELECTOR, sel + " td.label").text
        print("incident %s %s: %s" % (iid, flows, state))

        # 6. Filters by label state.
        choose = Select(driver.find_element(By.ID, "state"))
        for value in ("unlabeled", "attack"):
            choose.select_by_value(value)
            time.sleep(1.0)
            wait.until(lambda d: d.find_element(By.ID, "count").text != "")
            shown = bool(driver.find_elements(By.CSS_SELECTOR, sel))
            print("filter %s: %s" % (value, "shown" if shown else "hidden"))
        choose.select_by_value("all")

        # 7. Undo the incident's label.
        driver.find_element(By.ID, "undo").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, sel).get_attribute("class") == "incident unlabeled")
        print("undone %s: %s" % (iid, driver.find_element(By.CSS_SELECTOR, sel + " td.label").text))

    if args.screenshot:
        # Every incident, the first one open, the pictures on top.
        driver.execute_script(
            "const f = document.getElementById('filter'); f.value = '';"
            "f.dispatchEvent(new Event('input')); window.scrollTo(0, 0);"
        )
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#incidents tr.incident")) > 1)
        time.sleep(1.0)
        driver.save_screenshot(args.screenshot)
        print("screenshot %s" % args.screenshot)
finally:
    driver.quit()
