// berth's accessibility checks, run inside a page by tests/src/a11y.rs. Installs
// window.berthA11y once per page: `audit()` lists what the page gets wrong (names, document
// structure, progress bars, WCAG AA text contrast) and how much it looked at, `focus()` describes the focused element
// and its focus indicator against how it looked before it had focus (`remember()`).
if (!window.berthA11y) {
  // "a#approve" or "button.primary" plus the first words of its text: enough to find it.
  const describe = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += '#' + el.id;
    else if (typeof el.className === 'string' && el.className.trim()) {
      s += '.' + el.className.trim().split(/\s+/).join('.');
    }
    if (el.getAttribute('href')) s += `[href="${el.getAttribute('href')}"]`;
    const text = (el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 40);
    return text ? `${s} "${text}"` : s;
  };

  // The accessible name, by the rules that matter for these pages (accname 1.2, simplified):
  // aria-labelledby, aria-label, <label>s, then the content of buttons and links, then title.
  const accessibleName = (el) => {
    const ids = el.getAttribute('aria-labelledby');
    if (ids) {
      const text = ids.split(/\s+/).map((id) => document.getElementById(id))
        .filter(Boolean).map((e) => e.textContent.trim()).join(' ').trim();
      if (text) return text;
    }
    const aria = (el.getAttribute('aria-label') || '').trim();
    if (aria) return aria;
    if (el.labels && el.labels.length) {
      const text = [...el.labels].map((l) => l.textContent.trim()).join(' ').trim();
      if (text) return text;
    }
    if (el.tagName === 'BUTTON' || el.tagName === 'A') {
      const text = (el.innerText || el.textContent || '').trim();
      if (text) return text;
      const img = el.querySelector('img[alt]');
      if (img && img.alt.trim()) return img.alt.trim();
    }
    if (el.tagName === 'INPUT' && ['submit', 'button', 'reset'].includes(el.type)) {
      return (el.value || '').trim();
    }
    return (el.getAttribute('title') || '').trim();
  };

  // Colours as Chromium computes them: rgb(r, g, b) or rgba(r, g, b, a).
  const parse = (css) => {
    const m = /^rgba?\(([^)]*)\)$/.exec(css.trim());
    if (!m) return null;
    const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const blend = (top, under) => ({
    r: top.r * top.a + under.r * (1 - top.a),
    g: top.g * top.a + under.g * (1 - top.a),
    b: top.b * top.a + under.b * (1 - top.a),
    a: 1,
  });
  // WCAG 2 relative luminance and contrast ratio.
  const luminance = (c) => {
    const ch = (v) => {
      const s = v / 255;
      return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * ch(c.r) + 0.7152 * ch(c.g) + 0.0722 * ch(c.b);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const hex = (c) => '#' + [c.r, c.g, c.b]
    .map((v) => Math.round(v).toString(16).padStart(2, '0')).join('');

  // The colour behind `el`: its own and its ancestors' backgrounds, the first opaque one and
  // every translucent one above it, over the white canvas. A background image makes the
  // answer unknowable here, and is reported as such.
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (style.backgroundImage !== 'none') return { image: describe(e) };
      const c = parse(style.backgroundColor);
      if (c === null) return { unparsed: style.backgroundColor };
      if (c.a > 0) {
        layers.push(c);
        if (c.a >= 1) break;
      }
    }
    let colour = { r: 255, g: 255, b: 255, a: 1 };
    for (const layer of layers.reverse()) colour = blend(layer, colour);
    return { colour };
  };

  // Checks `fg` against the background of `el`; a fault names both colours and the ratio.
  const contrast = (el, fgCss, what, faults) => {
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const needed = large ? 3 : 4.5;
    const bg = background(el);
    if (!bg.colour) {
      faults.push(`${what} ${describe(el)}: contrast unknown (${JSON.stringify(bg)})`);
      return;
    }
    const fg = parse(fgCss);
    if (fg === null) {
      faults.push(`${what} ${describe(el)}: colour ${fgCss} not understood`);
      return;
    }
    const r = ratio(blend(fg, bg.colour), bg.colour);
    if (r < needed) {
      faults.push(`${what} ${describe(el)}: contrast ${r.toFixed(2)} < ${needed} ` +
        `(${hex(fg)} on ${hex(bg.colour)}, ${size}px)`);
    }
  };

  // Text a reader sees: inside the rendered page, not fallback content.
  const FALLBACK = 'script, style, noscript, template, meter, progress, option';
  const shownText = () => {
    const owners = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const el = node.parentElement;
      if (!node.data.trim() || !el || owners.has(el) || el.closest(FALLBACK)) continue;
      if (!el.checkVisibility({ visibilityProperty: true, opacityProperty: true })) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      if ([...range.getClientRects()].some((r) => r.width > 0 && r.height > 0)) owners.add(el);
    }
    return owners;
  };

  const CONTROLS = 'input:not([type=hidden]), select, textarea, button, a[href], ' +
    '[role=button], [role=link], [tabindex]:not([tabindex="-1"])';

  const audit = () => {
    const faults = [];
    const root = document.documentElement;
    if (!root.lang) faults.push('no <html lang>');
    if (!document.title.trim()) faults.push('no <title>');
    const h1 = document.querySelectorAll('h1').length;
    if (h1 !== 1) faults.push(`${h1} <h1> elements, not one`);
    const mains = document.querySelectorAll('main, [role=main]').length;
    if (mains !== 1) faults.push(`${mains} <main> landmarks, not one`);
    if (!document.querySelector('nav, [role=navigation]')) faults.push('no <nav> landmark');
    const seen = new Set();
    for (const el of document.querySelectorAll('[id]')) {
      if (seen.has(el.id)) faults.push(`id ${el.id} used twice`);
      seen.add(el.id);
    }
    const controls = document.querySelectorAll(CONTROLS);
    for (const el of controls) {
      if (!accessibleName(el)) faults.push(`${describe(el)} has no accessible name`);
    }
    for (const img of document.querySelectorAll('img:not([alt])')) {
      faults.push(`${describe(img)} has no alt`);
    }
    const bars = document.querySelectorAll('progress, meter, [role=progressbar], [role=meter]');
    for (const bar of bars) {
      if (!accessibleName(bar)) faults.push(`${describe(bar)} has no label`);
      const native = bar.tagName === 'PROGRESS' || bar.tagName === 'METER';
      if (!native && !bar.hasAttribute('aria-valuenow')) {
        faults.push(`${describe(bar)} has no aria-valuenow`);
      }
    }
    const texts = shownText();
    for (const el of texts) contrast(el, getComputedStyle(el).color, 'text', faults);
    for (const input of document.querySelectorAll('input[placeholder]')) {
      if (!input.value) {
        contrast(input, getComputedStyle(input, '::placeholder').color, 'placeholder', faults);
      }
    }
    return {
      faults,
      checked: { controls: controls.length, bars: bars.length, texts: texts.size },
    };
  };

  // What makes focus visible: outline and box shadow.
  const look = (el) => {
    const s = getComputedStyle(el);
    return `outline: ${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}; ` +
      `box-shadow: ${s.boxShadow}`;
  };

  // How each focusable element looks without focus, by its description (a live redraw may
  // replace the element itself by an equal one).
  const remember = () => {
    window.berthUnfocused = {};
    for (const el of document.querySelectorAll(CONTROLS)) {
      window.berthUnfocused[describe(el)] = look(el);
    }
    return Object.keys(window.berthUnfocused).length;
  };

  // The focused element, whether it matches :focus-visible, and what is wrong with its focus
  // indicator: none, no different from its unfocused look, or an outline of less than 3:1
  // against what surrounds it (WCAG 2.2 non-text contrast).
  const focus = () => {
    const el = document.activeElement;
    if (!el || el === document.body) return { element: null };
    const who = describe(el);
    const faults = [];
    const before = (window.berthUnfocused || {})[who];
    const now = look(el);
    if (before === undefined) faults.push(`${who}: its unfocused look was not recorded`);
    else if (before === now) faults.push(`${who}: looks the same focused (${now})`);
    const s = getComputedStyle(el);
    const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
    if (outline) {
      const around = background(el.parentElement);
      const colour = parse(s.outlineColor);
      if (around.colour && colour) {
        const r = ratio(blend(colour, around.colour), around.colour);
        if (r < 3) {
          faults.push(`${who}: focus outline ${hex(colour)} on ${hex(around.colour)} ` +
            `has contrast ${r.toFixed(2)} < 3`);
        }
      }
    } else if (s.boxShadow === 'none') {
      faults.push(`${who}: no outline or box shadow when focused`);
    }
    return { element: who, id: el.id, visible: el.matches(':focus-visible'), faults };
  };

  window.berthA11y = { audit, remember, focus, describe };
}
