"""Drive sam2 serve's web page in headless Chromium, as a person would: open a video with the
file picker, click the object on frame 0, track, step to frame 3 with the arrow keys, correct
with a positive click and a shift-click, track again, undo and redo the last click. Prints one
JSON object: the prompts the server holds and every mask the page received, so the caller can
compare them with the library's for the same actions.

    python3 page_session.py URL VIDEO [SCREENSHOT.png]
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

url, video = sys.argv[1], sys.argv[2]
screenshot = sys.argv[3] if len(sys.argv) > 3 else None

options = webdriver.ChromeOptions()
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,860"]:
    options.add_argument(arg)
service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver") if __import__("os").path.exists("/usr/bin/chromedriver") else None
driver = webdriver.Chrome(options=options, service=service) if service else webdriver.Chrome(options=options)
wait = WebDriverWait(driver, 120)


def js(script, *args):
    return driver.execute_script(script, *args)


def status():
    return driver.find_element(By.ID, "status").text


def click_video(x, y, shift=False):
    """Click at video pixel (x, y) of the canvas, whatever its displayed size."""
    canvas = driver.find_element(By.ID, "canvas")
    w, h = canvas.size["width"], canvas.size["height"]
    vw, vh = js("return [canvas.width, canvas.height]")
    chain = ActionChains(driver).move_to_element_with_offset(canvas, x * w / vw - w / 2, y * h / vh - h / 2)
    if shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain = chain.click()
    chain.perform()


def prompts_on(frame):
    return [p for p in js("return window.sam2.session.prompts") if p["frame_index"] == frame]


def wait_prompts(frame, n):
    wait.until(lambda d: sum(len(p["points"]) for p in prompts_on(frame)) == n and "mask in" in status())


def track():
    driver.find_element(By.ID, "track").click()
    wait.until(lambda d: js("return window.sam2.tracking === null") and status().startswith("Tracked"))


try:
    driver.get(url)
    wait.until(lambda d: d.find_element(By.ID, "model").text != "")
    driver.find_element(By.ID, "file").send_keys(video)
    wait.until(lambda d: js("return window.sam2.session !== null && window.sam2.images.has(0)"))

    click_video(100, 80)
    wait_prompts(0, 1)
    track()

    # The page followed the tracker to the last frame: Home, then three frames on.
    keys = ActionChains(driver).send_keys(Keys.HOME)
    for _ in range(3):
        keys = keys.send_keys(Keys.ARROW_RIGHT)
    keys.perform()
    wait.until(lambda d: js("return window.sam2.frame") == 3)
    click_video(120, 90)
    wait_prompts(3, 1)
    click_video(50, 50, shift=True)
    wait_prompts(3, 2)
    # Ctrl-Z takes the negative click back; clicking again puts the same prompt in.
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    wait.until(lambda d: sum(len(p["points"]) for p in prompts_on(3)) == 1)
    click_video(50, 50, shift=True)
    wait_prompts(3, 2)
    track()

    session = js("return window.sam2.session")
    masks = js("""
        const out = {};
        for (const [frame, results] of window.sam2.masks) out[frame] = results;
        return out;""")
    if screenshot:
        js("show(3)")
        time.sleep(1)
        driver.save_screenshot(screenshot)
    print(json.dumps({"session": session, "masks": masks, "status": status()}))
finally:
    driver.quit()
