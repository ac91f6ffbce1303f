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
4. Back on the page: clicks "attack" on the first alert and waits until the page shows the
   label stored.

Prints one line per step (`cookie ...`, `address ...`, `fetch ORIGIN: ...`, `form ORIGIN:
...`, `rebound: ...`, `labeled UID`); the Rust test checks them, the sensor's log and the
label store. Usage: label_click.py URL [--attacker ORIGIN]... [--rebind NAME]"""

import argparse
import sys
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("--attacker", action="append", default=[])
ap.add_argument("--rebind")
args = ap.parse_args()
page = urlsplit(args.url)
base = "%s://%s/" % (page.scheme, page.netloc)

opts = Options()
opts.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
    opts.add_argument(arg)
# Test names resolve to loopback: an attacker's site on another port, and a rebound name.
names = [urlsplit(o).hostname for o in args.attacker] + ([args.rebind] if args.rebind else [])
rules = ",".join("MAP %s 127.0.0.1" % n for n in names if n not in ("127.0.0.1", "localhost"))
if rules:
    opts.add_argument("--host-resolver-rules=" + rules)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 30)


def body_text():
    return driver.find_element(By.TAG_NAME, "body").text.strip().replace("\n", " ")


def alerts_loaded():
    try:
        return wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alerts tr[data-uid]") or False)
    except Exception:
        sys.exit("no alerts listed at %s; the page says: %s" % (driver.current_url, body_text()))


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

    # 4. The analyst labels with a click.
    driver.get(base)
    row = alerts_loaded()[0]
    uid = row.get_attribute("data-uid")
    row.find_element(By.CSS_SELECTOR, "button.label-attack").click()
    selector = '#alerts tr[data-uid="%s"]' % uid
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, selector).get_attribute("class") == "attack")
    status = driver.find_element(By.ID, "status").text
    if not status.startswith("labeled " + uid):
        sys.exit("the page says: " + status)
    print("labeled", uid)
finally:
    driver.quit()
