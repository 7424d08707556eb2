//! The dashboard's accessibility (issue 17: "labels, contrast, and keyboard-usable actions"),
//! checked in a real headless chromium on every page through scripts run in the page (names,
//! landmarks, WCAG AA contrast) and real key presses (Tab reaches every control with a visible
//! focus indicator, live redraws keep focus and what was typed, Enter on Approve approves). The
//! checks themselves are first shown to catch faults planted in a page of known faults.
//!
//! Run first against the dashboard as it was, they found: focus outlines of 2.03:1 on white
//! (amber #f5a623) on every control of the page body, keyboard focus thrown back to the page
//! on every live redraw (links without ids), a number typed into Scale reset by the next
//! redraw, and no `<nav>` on error pages. Text contrast, names and labels already passed.

use berth_proto::v1::*;
use berth_tests::a11y::{self, Audit, Focus};
use berth_tests::browser::{Browser, Key};
use berth_tests::cluster::{Fabric, all_ready, httpd_spec, start_nodes};
use berth_tests::dashboard::{Ui, WAIT, assert_approved_in_page, screenshots};
use berth_tests::poll_until;

const IMAGE: &str = "a11y-busybox:1";
/// More Tab presses than any page has stops.
const MAX_TABS: usize = 80;

/// A page with one fault of each kind the audit looks for, and one control done right.
const FAULTY: &str = "<!DOCTYPE html><html><head></head><body>\
    <p style=\"color:#999\">grey on white</p>\
    <p style=\"color:#fff;background:#ffeb3b\">white on yellow</p>\
    <h2 style=\"color:#777;font-size:30px\">large grey, 4.48:1, passes as large text</h2>\
    <input id=\"nameless\"><button></button><img src=\"x.png\">\
    <progress max=\"3\" value=\"1\"></progress><div role=\"progressbar\" aria-label=\"bar\"></div>\
    <label for=\"named\">Named</label><input id=\"named\" placeholder=\"faint\" \
      style=\"color:#000\"><style>#named::placeholder{color:#bbb}</style>\
    <a href=\"#x\" style=\"outline:none\">a link that hides its focus</a>\
    <span id=\"named\"></span></body></html>";

#[test]
fn the_checks_find_faults_planted_in_a_page() {
    let browser = Browser::start();
    browser.goto(&format!("data:text/html,{}", FAULTY.replace('#', "%23")));
    let Audit { faults, .. } = a11y::audit(&browser);
    let found = |needle: &str| faults.iter().any(|f| f.contains(needle));
    for expected in [
        "no <html lang>",
        "no <title>",
        "0 <h1> elements",
        "0 <main> landmarks",
        "no <nav> landmark",
        "id named used twice",
        "input#nameless has no accessible name",
        "button has no accessible name",
        "img has no alt",
        "progress has no label",
        "has no aria-valuenow",
        "\"grey on white\": contrast 2.85 < 4.5",
        "\"white on yellow\": contrast",
        "placeholder input#named",
    ] {
        assert!(
            found(expected),
            "the audit missed {expected:?}: {faults:#?}"
        );
    }
    assert!(
        !found("large grey"),
        "large text needs only 3:1: {faults:#?}"
    );
    let stops = a11y::tab_through(&browser, MAX_TABS);
    let link = stops
        .iter()
        .find(|s| {
            s.element
                .as_deref()
                .is_some_and(|e| e.starts_with("a[href"))
        })
        .unwrap_or_else(|| panic!("Tab never reached the link: {stops:#?}"));
    assert!(
        link.faults
            .iter()
            .any(|f| f.contains("looks the same focused")),
        "a focus hidden by outline:none is caught: {link:?}"
    );
}

/// One node, `hello` v1 with a replica, then v2 waiting for approval; the container id of
/// the v1 replica.
fn awaiting_with_a_replica(ui: &Ui) -> String {
    ui.api.apply(httpd_spec("hello", IMAGE, "v1", 1));
    let d = ui.api.wait("hello", "v1 ready", |d| all_ready(d, 1));
    let mut v2 = httpd_spec("hello", IMAGE, "v2", 1);
    v2.rollout.as_mut().unwrap().approval = Approval::Manual as i32;
    ui.api.apply(v2);
    ui.api.wait("hello", "v2 awaiting approval", |d| {
        d.phase == RolloutPhase::AwaitingApproval as i32
    });
    d.replica_status[0].container_id.clone()
}

/// What is wrong on the open page `name`: the audit's faults, then every Tab stop that shows
/// no visible focus; panics if the audit had nothing to look at.
fn page_faults(browser: &Browser, name: &str) -> Vec<String> {
    let audit = a11y::audit(browser);
    println!("{name}: checked {:?}", audit.checked);
    assert!(
        audit.checked.texts >= 3 && audit.checked.controls > 0,
        "{name}: nothing to check? {audit:?}"
    );
    let mut faults: Vec<String> = audit.faults;
    let stops = a11y::tab_through(browser, MAX_TABS);
    assert!(!stops.is_empty(), "{name}: Tab reaches nothing");
    for stop in stops {
        let who = stop.element.unwrap_or_default();
        if !stop.visible {
            faults.push(format!(
                "{who} has keyboard focus but is not :focus-visible"
            ));
        }
        faults.extend(stop.faults);
    }
    // htmx keeps focus across a live redraw only on an element it can find again by its id.
    let lost = browser.js(
        "return [...document.querySelectorAll('[hx-trigger*=\"sse:\"] :is(a[href], button, \
           input:not([type=hidden]), select, textarea, [tabindex])')] \
           .filter(e => !e.id).map(e => e.outerHTML.slice(0, 80));",
    );
    for element in lost.as_array().into_iter().flatten() {
        faults.push(format!("loses focus when the page redraws live: {element}"));
    }
    faults.into_iter().map(|f| format!("{name}: {f}")).collect()
}

/// Tab to the deployment's link on the deployments page, let the page redraw live (it does
/// at least every few seconds), and find focus still there.
fn focus_survives_a_live_redraw(ui: &Ui, browser: &Browser) {
    browser.goto(&ui.url("/deployments"));
    browser.wait_text("the deployment", "tr[data-deployment=hello]", WAIT, |_| {
        true
    });
    let link = "[href=\"/deployments/default/hello\"]";
    let before = a11y::tab_to(browser, "hello's link", MAX_TABS, |f| {
        f.element.as_deref().is_some_and(|e| e.contains(link))
    });
    next_live_redraw(browser);
    let after = a11y::focused(browser);
    assert_eq!(
        after.element, before.element,
        "keyboard focus moved when the page redrew"
    );
    // Had focus fallen back to the page, the next Tab would start over at the skip link.
    browser.press(Key::Tab);
    let next = a11y::focused(browser);
    assert!(
        next.element != before.element
            && !next
                .element
                .as_deref()
                .unwrap_or_default()
                .contains("Skip to content"),
        "Tab goes on from the link, not from the top: {next:?}"
    );
}

/// Waits for the open page's next live redraw (htmx swapping its `<main>` in again).
fn next_live_redraw(browser: &Browser) {
    browser.js("window.berthSwaps = 0; \
         document.body.addEventListener('htmx:afterSettle', () => window.berthSwaps++);");
    poll_until("a live redraw", WAIT, || {
        (browser.js("return window.berthSwaps;").as_u64() > Some(0)).then_some(())
    });
}

/// A number typed into Scale's field, not yet sent, is still there after a live redraw.
fn typing_survives_a_live_redraw(ui: &Ui, browser: &Browser) {
    browser.goto(&ui.url("/deployments/default/hello"));
    let field = a11y::tab_to(browser, "the replicas field", MAX_TABS, |f| {
        f.id == "replicas"
    });
    assert!(field.visible, "{field:?}");
    browser.js("document.querySelector('#replicas').select();");
    browser.fill("#replicas", "7");
    next_live_redraw(browser);
    assert_eq!(
        browser.js("return document.querySelector('#replicas').value;"),
        serde_json::json!("7"),
        "what was typed is kept"
    );
    assert_eq!(a11y::focused(browser).id, "replicas", "and so is focus");
}

#[test]
fn every_page_is_accessible_and_approve_works_from_the_keyboard() {
    let ui = Ui::start();
    let mut fabric = Fabric::new();
    let _nodes = start_nodes(&ui.sched, &mut fabric, 1, "a11y", IMAGE);
    poll_until("the node ready", WAIT, || {
        ui.api.nodes().iter().all(|n| n.ready).then_some(())
    });
    let container = awaiting_with_a_replica(&ui);
    let browser = Browser::start();

    let mut faults = Vec::new();
    for (name, path) in [
        ("cluster", "/".to_string()),
        ("deployments", "/deployments".into()),
        ("deployment", "/deployments/default/hello".into()),
        ("releases", "/releases".into()),
        ("log", format!("/containers/{container}/log")),
        ("sign-in", "/login".into()),
        ("not found", "/deployments/default/nope".into()),
    ] {
        browser.goto(&ui.url(&path));
        browser.wait_text(name, "h1", WAIT, |_| true);
        faults.extend(page_faults(&browser, name));
    }
    assert!(faults.is_empty(), "accessibility faults: {faults:#?}");

    focus_survives_a_live_redraw(&ui, &browser);
    typing_survives_a_live_redraw(&ui, &browser);

    // Approve, from the keyboard alone.
    browser.goto(&ui.url("/deployments/default/hello"));
    browser.wait_text("the rollout waits", "#phase", WAIT, |t| {
        t == "awaiting-approval"
    });
    let approve: Focus = a11y::tab_to(&browser, "Approve", MAX_TABS, |f| f.id == "approve");
    assert!(approve.visible, "focus on Approve is visible: {approve:?}");
    assert!(approve.faults.is_empty(), "{approve:?}");
    browser.screenshot(&screenshots(), "deployment-keyboard-focus");
    browser.press(Key::Enter);
    assert_approved_in_page(&browser, &ui.api, "local");
}
