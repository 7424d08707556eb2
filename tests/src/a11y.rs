//! Accessibility checks run in a real page through [`Browser`]: an audit of names, document
//! structure, progress bars and WCAG AA contrast (`a11y.js`), and keyboard focus moved by
//! real Tab presses with what its focus indicator looks like.

use serde::Deserialize;

use crate::browser::{Browser, Key};

/// The checks, installed once per page (each call brings them along: a navigation drops them).
const CHECKS: &str = include_str!("a11y.js");

fn call(browser: &Browser, expr: &str) -> serde_json::Value {
    browser.js(&format!("{CHECKS}\nreturn window.berthA11y.{expr};"))
}

/// What [`audit`] found on a page, and how much it looked at.
#[derive(Debug, Clone, Deserialize)]
pub struct Audit {
    /// One line each: controls, links or bars without a name, images without alt, a missing
    /// `lang`, title, `<h1>`, `<main>` or `<nav>`, ids used twice, and text (placeholders
    /// too) under WCAG AA contrast (4.5:1, 3:1 for large text).
    pub faults: Vec<String>,
    pub checked: Checked,
}

/// How many of each thing the audit checked: a check of nothing proves nothing.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Checked {
    /// Form controls, links and other focusable elements.
    pub controls: u64,
    /// Progress bars and meters.
    pub bars: u64,
    /// Elements with text shown.
    pub texts: u64,
}

/// Audits the open page.
pub fn audit(browser: &Browser) -> Audit {
    serde_json::from_value(call(browser, "audit()")).expect("the audit's findings")
}

/// Where keyboard focus is, as the page tells it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Focus {
    /// The focused element, described (`button#approve "Approve revision 2"`); None when
    /// focus is on the page itself.
    pub element: Option<String>,
    #[serde(default)]
    pub id: String,
    /// Whether it matches `:focus-visible` (what the browser shows for keyboard focus).
    #[serde(default)]
    pub visible: bool,
    /// What is wrong with its focus indicator: none, no change from its unfocused look, or
    /// an outline under 3:1 against its surroundings.
    #[serde(default)]
    pub faults: Vec<String>,
}

/// Records how every focusable element looks without focus, for [`focused`] to compare
/// against; returns how many there are.
pub fn remember_unfocused(browser: &Browser) -> u64 {
    call(browser, "remember()")
        .as_u64()
        .expect("a count of focusable elements")
}

pub fn focused(browser: &Browser) -> Focus {
    serde_json::from_value(call(browser, "focus()")).expect("the focused element")
}

/// Presses Tab from the top of the freshly loaded page until focus leaves the page or comes
/// back to where it started, at most `max` times; every stop on the way, in order.
pub fn tab_through(browser: &Browser, max: usize) -> Vec<Focus> {
    remember_unfocused(browser);
    let mut stops: Vec<Focus> = Vec::new();
    for _ in 0..max {
        browser.press(Key::Tab);
        let now = focused(browser);
        if now.element.is_none() || stops.first().is_some_and(|first| *first == now) {
            return stops;
        }
        stops.push(now);
    }
    panic!("focus did not leave the page after {max} Tab presses: {stops:#?}");
}

/// Presses Tab until focus is on what `wanted` accepts (`what` names it); panics naming each
/// stop if it never is within `max` presses.
pub fn tab_to(browser: &Browser, what: &str, max: usize, wanted: impl Fn(&Focus) -> bool) -> Focus {
    remember_unfocused(browser);
    let mut stops = Vec::new();
    for _ in 0..max {
        browser.press(Key::Tab);
        let now = focused(browser);
        if wanted(&now) {
            return now;
        }
        stops.push(now.element);
    }
    panic!("{what} never got focus in {max} Tab presses; focus went {stops:#?}");
}
