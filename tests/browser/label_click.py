"""Drives mnpflow's analysts' page in headless chromium (Debian's chromium, chromium-driver and
python3-selenium): waits for the alert list, clicks "attack" on the first alert, and waits
until the page shows the label stored. Prints `labeled UID`; the Rust test then checks the
label store. Usage: label_click.py URL"""

import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url = sys.argv[1]
opts = Options()
opts.binary_location = "/usr/bin/chromium"
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
    opts.add_argument(arg)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
try:
    driver.get(url)
    wait = WebDriverWait(driver, 30)
    row = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alerts tr[data-uid]") or False)[0]
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
