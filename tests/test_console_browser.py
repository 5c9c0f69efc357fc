"""The web console in a real browser (Debian's headless chromium, driven by
selenium) against a real server: sign in, browse, search, analyse, follow."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from harness import ServerProcess
from logharbor import LogClient, LogItem

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("LOGHARBOR_REQUIRE_BROWSER"):
        raise RuntimeError(
            "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
        )
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

WAIT = 15  # seconds for anything to appear on the page


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object], what: str) -> object:
    try:
        # the page re-renders as answers come: an element read just as it is replaced
        # is stale, and the condition is tried again
        waiting = WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,))
        return waiting.until(condition)
    except TimeoutException:
        raise AssertionError(f"{what} did not happen; page shows:\n{page_text(driver)}") from None


def page_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def text_of(driver: WebDriver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return str(found[0].text) if found else ""


def sign_in(driver: WebDriver, server: ServerProcess, secret: str | None = None) -> None:
    driver.get(server.endpoint + "/console/")
    wait_for(driver, lambda d: d.find_elements(By.ID, "key-id"), "the sign-in form")
    driver.find_element(By.ID, "key-id").send_keys(server.access_key_id)
    driver.find_element(By.ID, "key-secret").send_keys(secret or server.access_key_secret)
    driver.find_element(By.ID, "sign-in").click()


def search(driver: WebDriver, query: str) -> None:
    box = driver.find_element(By.ID, "query")
    box.clear()
    box.send_keys(query)
    driver.find_element(By.ID, "run").click()


@pytest.fixture
def shop(client: LogClient, unique_name: Callable[[str], str]) -> str:
    """A project with an indexed logstore of 20 searchable logs, 5 of them errors."""
    project = unique_name("console")
    client.create_project(project, "the console's shop")
    client.create_logstore(project, "access", shard_count=2)
    client.create_index(project, "access", {"line": {"token": [" ", "/"]}, "keys": {}})
    now = int(time.time())
    client.put_logs(
        project,
        "access",
        [
            LogItem(
                {"path": f"/p{i % 3}", "status": "500" if i % 4 == 0 else "200", "n": str(i)},
                time_ns=(now - 60 + i) * 1_000_000_000,
            )
            for i in range(20)
        ],
        topic="web",
    )
    deadline = time.monotonic() + WAIT
    while client.query(project, "access", "*", start=now - 600, end=now + 60).matched != 20:
        assert time.monotonic() < deadline, "the logs did not become searchable"
        time.sleep(0.1)
    return project


def test_sign_in_browse_search_and_analyse(
    browser: WebDriver, server: ServerProcess, shop: str
) -> None:
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.find_element(By.LINK_TEXT, shop).click()
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, "access"), "the logstore list")
    browser.find_element(By.LINK_TEXT, "access").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "query"), "the search form")

    search(browser, "status: 500")
    wait_for(browser, lambda d: "5 logs matched" in text_of(d, "#summary"), "the error count")
    entries = browser.find_elements(By.CSS_SELECTOR, "#logs details")
    assert len(entries) == 5
    assert all("status=500" in e.text for e in entries)
    bars = browser.find_elements(By.CSS_SELECTOR, "#histogram .bar")
    assert sum(int(b.get_attribute("data-count") or 0) for b in bars) == 5
    # newest first: n counts up with time, so the first entry is the newest error
    assert "n=16" in entries[0].text

    entries[0].find_element(By.TAG_NAME, "summary").click()
    opened = entries[0].find_element(By.TAG_NAME, "dl").text
    assert "__topic__" in opened and "web" in opened and "cursor" in opened
    # the logs around it in its shard: n=6..15 before, n=17..19 after
    entries[0].find_element(By.CLASS_NAME, "context-button").click()
    wait_for(browser, lambda d: "10 before and 3 after" in text_of(d, ".context"), "the context")
    around = browser.find_elements(By.CSS_SELECTOR, ".context details")
    assert ["n=16" in e.text for e in around] == [False] * 10 + [True] + [False] * 3

    # a histogram bar opens its own stretch of time
    busy = next(b for b in bars if b.get_attribute("data-count") != "0")
    count = busy.get_attribute("data-count")
    browser.execute_script("arguments[0].closest('a').click()", busy)
    wait_for(browser, lambda d: f"{count} logs matched" in text_of(d, "#summary"), "the zoom")
    assert "–" in browser.find_element(By.CSS_SELECTOR, "#range option:checked").text
    Select(browser.find_element(By.ID, "range")).select_by_value("1h")

    search(browser, "* | select status, count(*) as c group by status order by status")
    wait_for(browser, lambda d: "2 rows" in text_of(d, "#summary"), "the SQL answer")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
    assert rows == ["200 15", "500 5"]

    search(browser, "status: (500")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".error"), "the syntax error")
    assert "InvalidQuery" in text_of(browser, ".error")


def test_pages_keep_the_window_of_their_search(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    now = int(time.time())
    more = [LogItem({"n": str(i)}, time_ns=(now - 30) * 1_000_000_000) for i in range(60)]
    client.put_logs(shop, "access", more)
    deadline = time.monotonic() + WAIT
    while client.query(shop, "access", "*", start=now - 600, end=now + 60).matched != 80:
        assert time.monotonic() < deadline, "the logs did not become searchable"
        time.sleep(0.1)
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?q=*")
    wait_for(browser, lambda d: "80 logs matched · 1–50 shown" in text_of(d, "#summary"), "page 1")
    # logs arriving later are outside the window the pages keep (it ends 1 s ahead)
    time.sleep(1.5)
    client.put_logs(shop, "access", [LogItem({"n": "late"}) for _ in range(10)])
    while client.query(shop, "access", "*", start=now - 600, end=now + 60).matched != 90:
        assert time.monotonic() < deadline + WAIT, "the late logs did not become searchable"
        time.sleep(0.1)
    browser.find_element(By.LINK_TEXT, "next ›").click()
    wait_for(browser, lambda d: "80 logs matched · 51–80 shown" in text_of(d, "#summary"), "page 2")
    browser.find_element(By.LINK_TEXT, "‹ previous").click()
    wait_for(browser, lambda d: "80 logs matched · 1–50 shown" in text_of(d, "#summary"), "page 1")
    # SQL without LIMIT answers 100 rows, and the page says so
    client.put_logs(shop, "access", [LogItem({"n": "more"}) for _ in range(20)])
    while client.query(shop, "access", "*", start=now - 600, end=now + 60).matched != 110:
        assert time.monotonic() < deadline + 2 * WAIT, "the logs did not become searchable"
        time.sleep(0.1)
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?q=*%7Cselect%20n")
    wait_for(browser, lambda d: "100 rows" in text_of(d, "#summary"), "the SQL answer")
    assert "add LIMIT n for more" in text_of(browser, "#summary")


def test_log_text_is_shown_as_text_never_as_markup(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    hostile = "<img src=x onerror=\"document.title='owned'\">"
    client.put_logs(shop, "access", [LogItem({"status": "418", "note": hostile})])
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?q=status%3A%20418")
    wait_for(browser, lambda d: "1 logs matched" in text_of(d, "#summary"), "the hostile log")
    assert hostile in text_of(browser, "#logs")
    assert not browser.find_elements(By.CSS_SELECTOR, "#logs img")
    assert browser.title == "LogHarbor"


def test_live_tail_shows_new_logs_as_they_arrive(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?tab=tail")
    wait_for(browser, lambda d: "following 2 shards" in text_of(d, "#tail-status"), "the tail")
    assert not browser.find_elements(By.CSS_SELECTOR, "#tail details")  # only new logs
    client.put_logs(shop, "access", [LogItem({"message": "hello from the tail"})])
    wait_for(browser, lambda d: "hello from the tail" in text_of(d, "#tail"), "the new log")
    browser.find_element(By.ID, "tail-filter").send_keys("nothing like it")
    wait_for(
        browser,
        lambda d: not d.find_element(By.CSS_SELECTOR, "#tail details").is_displayed(),
        "the filter",
    )


def test_live_tail_of_one_shard_waits_on_the_server(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    """Following one shard, the tail long-polls: a new log shows without a round of
    polling, and pausing and resuming keeps following."""
    client.create_logstore(shop, "single", shard_count=1)
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/single?tab=tail")
    wait_for(browser, lambda d: "following 1 shards" in text_of(d, "#tail-status"), "the tail")
    time.sleep(1)  # the long poll is waiting now
    client.put_logs(shop, "single", [LogItem({"message": "first"})])
    wait_for(browser, lambda d: "first" in text_of(d, "#tail"), "the first log")
    browser.find_element(By.ID, "tail-pause").click()
    wait_for(browser, lambda d: "paused" in text_of(d, "#tail-status"), "the pause")
    client.put_logs(shop, "single", [LogItem({"message": "second"})])
    time.sleep(1.5)
    assert "second" not in text_of(browser, "#tail")
    browser.find_element(By.ID, "tail-pause").click()
    wait_for(browser, lambda d: "second" in text_of(d, "#tail"), "the log written while paused")


def test_live_tail_follows_the_children_of_a_split_from_their_beginning(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    """Logs written to a split's children right after the split are not missed (they
    were, when new shards were followed from their end)."""
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?tab=tail")
    wait_for(browser, lambda d: "following 2 shards" in text_of(d, "#tail-status"), "the tail")
    client.split_shard(shop, "access", 0, "40000000000000000000000000000000")
    for key in ("10000000000000000000000000000000", "60000000000000000000000000000000"):
        client.put_logs(shop, "access", [LogItem({"message": f"child {key[0]}"})], hash_key=key)
    wait_for(
        browser,
        lambda d: "child 1" in text_of(d, "#tail") and "child 6" in text_of(d, "#tail"),
        "the logs of both children",
    )
    # the parent is dropped once read to its end: the two children and shard 1
    wait_for(browser, lambda d: "following 3 shards" in text_of(d, "#tail-status"), "the drop")


def test_large_integers_and_bad_addresses(
    browser: WebDriver, server: ServerProcess, shop: str
) -> None:
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    page = f"{server.endpoint}/console/#/projects/{shop}/logstores/access"
    # past 2^53 a JSON number loses digits in JavaScript: shown exactly all the same
    browser.get(page + "?q=*%20%7C%20select%201796530832921714945%20as%20big%20limit%201")
    wait_for(browser, lambda d: "1 rows" in text_of(d, "#summary"), "the answer")
    assert text_of(browser, "#results tbody") == "1796530832921714945"
    # an address whose names the API would never accept is nobody's page: a crafted
    # name can never become other path segments of a request
    for bad in ("#/projects/%E0%A4%A", "#/projects/p%2Flogstores%2Fx%2Fshards%2F0%2Fmerge"):
        browser.get(f"{server.endpoint}/console/{bad}")
        wait_for(browser, lambda d: d.find_elements(By.ID, "not-found"), f"no page for {bad}")


def test_searching_a_logstore_without_an_index_says_how_to_make_one(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    client.create_logstore(shop, "raw", shard_count=1)
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/raw?q=*")
    wait_for(browser, lambda d: d.find_elements(By.ID, "no-index"), "the hint")
    assert "IndexConfigNotExist" in text_of(browser, ".error")
    assert "Searching" not in page_text(browser)


def save_index(browser: WebDriver, page: str, config: str) -> None:
    """Open a logstore's index tab, write ``config`` into the editor, and save."""
    browser.get(page + "?tab=index")
    wait_for(browser, lambda d: d.find_elements(By.ID, "index-save"), "the index editor")
    editor = browser.find_element(By.ID, "index-config")
    editor.clear()
    editor.send_keys(config)
    browser.find_element(By.ID, "index-save").click()


def test_an_index_is_created_and_changed_from_the_index_tab(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    client.create_logstore(shop, "fresh", shard_count=1)
    client.put_logs(shop, "fresh", [LogItem({"status": "503", "path": "/pay"})])
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    page = f"{server.endpoint}/console/#/projects/{shop}/logstores/fresh"
    browser.get(page + "?tab=index")
    wait_for(browser, lambda d: d.find_elements(By.ID, "no-index"), "the offer to create one")
    save_index(browser, page, '{"line": {}, "keys": {"status": {"type": "long"}}}')
    wait_for(browser, lambda d: d.find_elements(By.ID, "index-lag"), "the index made")
    assert client.get_index(shop, "fresh")["config"]["keys"]["status"]["type"] == "long"
    browser.get(page + "?q=status%20%3E%20500")
    wait_for(browser, lambda d: "1 logs matched" in text_of(d, "#summary"), "a search by number")
    # a bad configuration is refused, with the reason, and nothing changes
    save_index(browser, page, '{"keys": {"status": {"type": "number"}}}')
    wait_for(browser, lambda d: "type must be one of" in text_of(d, "#index-status"), "the refusal")
    assert client.get_index(shop, "fresh")["config"]["keys"]["status"]["type"] == "long"


def test_shards_and_index_tabs(browser: WebDriver, server: ServerProcess, shop: str) -> None:
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?tab=shards")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "tbody tr"), "the shard table")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert len(rows) == 2 and all("readwrite" in r for r in rows)
    browser.find_element(By.ID, "tab-index").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "index-config"), "the index settings")
    assert '"token"' in browser.find_element(By.ID, "index-config").get_attribute("value")
    assert "Every log is indexed" in text_of(browser, "#index-lag")


def test_consumer_groups_tab_shows_holders_lag_and_checkpoints(
    browser: WebDriver, server: ServerProcess, client: LogClient, shop: str
) -> None:
    client.create_consumer_group(shop, "access", "billing", timeout=30)
    held = client.heartbeat(shop, "access", "billing", "worker-1", [])
    assert held == [0, 1]
    start = client.get_cursor(shop, "access", 0, "begin")
    client.update_checkpoint(shop, "access", "billing", 0, start, consumer="worker-1")
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, shop), "the project list")
    browser.get(f"{server.endpoint}/console/#/projects/{shop}/logstores/access?tab=groups")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".group tbody tr"), "the group")
    assert "billing" in text_of(browser, ".group h3")
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, ".group tbody tr")]
    assert len(rows) == 2 and all("worker-1" in r for r in rows)
    assert start in rows[0]  # shard 0's checkpoint; shard 1 has none
    assert "none" in rows[1]


def test_projects_and_logstores_are_created_from_the_console(
    browser: WebDriver, server: ServerProcess, client: LogClient, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("made")
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.ID, "new-project"), "the project form")
    form = browser.find_element(By.ID, "new-project")
    form.find_element(By.NAME, "name").send_keys("Not A Name")
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#new-project .error"), "refusal")
    form.find_element(By.NAME, "name").clear()
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "description").send_keys("made in the console")
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "new-logstore"), "the new project's page")
    form = browser.find_element(By.ID, "new-logstore")
    form.find_element(By.NAME, "name").send_keys("web")
    shards = form.find_element(By.NAME, "shardCount")
    shards.clear()
    shards.send_keys("3")
    form.find_element(By.TAG_NAME, "button").click()
    # a new logstore has no index: the page goes where one is made
    wait_for(browser, lambda d: d.find_elements(By.ID, "no-index"), "the new logstore's index tab")
    assert client.get_logstore(name, "web").shard_count == 3
    assert client.get_project(name).description == "made in the console"


def test_a_wrong_secret_is_refused_and_sign_out_forgets_the_key(
    browser: WebDriver, server: ServerProcess
) -> None:
    sign_in(browser, server, secret="not-the-secret")
    wait_for(browser, lambda d: "SignatureNotMatch" in text_of(d, ".error"), "the refusal")
    assert browser.find_elements(By.ID, "key-id")  # still on the sign-in form
    sign_in(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.ID, "sign-out"), "the signed-in page")
    browser.find_element(By.ID, "sign-out").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "key-id"), "the sign-in form again")
    browser.refresh()
    wait_for(browser, lambda d: d.find_elements(By.ID, "key-id"), "the sign-in form after reload")


def test_a_server_without_signatures_opens_without_sign_in(
    browser: WebDriver, server_factory: Callable[..., ServerProcess]
) -> None:
    open_server = server_factory(auth=False)
    browser.get(open_server.endpoint + "/console/")
    wait_for(browser, lambda d: "Projects" in page_text(d), "the project list")
    assert not browser.find_elements(By.ID, "key-id")
    assert "No projects yet" in page_text(browser)
