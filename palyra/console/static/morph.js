// Keyed updates for the pages that poll: a refresh builds the new rows with h() as usual, and
// morph() carries what changed into the rows on the page, matching children by their key (the
// `key` given to h()) or else by position. Rows that stay keep their nodes, so an open
// <details>, the focus, a text selection and the scroll position survive every poll.

// What the reader sets on a node, which a refresh must not undo.
const KEEP = new Set(["open"]);

// Handlers go through one listener per event type that calls whatever the node's latest
// build said, so a kept node runs the new closure (with the new row's data), not the old one.
export function on(node, type, handler) {
  if (!node.__handlers) node.__handlers = {};
  if (!(type in node.__handlers)) {
    node.addEventListener(type, (event) => {
      const current = node.__handlers[type];
      if (current) return current(event);
      return undefined;
    });
  }
  node.__handlers[type] = handler;
}

function adoptHandlers(old, fresh) {
  const mine = old.__handlers || {};
  const theirs = fresh.__handlers || {};
  for (const type of Object.keys(mine)) if (!(type in theirs)) mine[type] = null;
  for (const [type, handler] of Object.entries(theirs)) on(old, type, handler);
}

export function morph(old, fresh) {
  if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName || old.__key !== fresh.__key) {
    old.replaceWith(fresh);
    return fresh;
  }
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
    return old;
  }
  for (const { name } of [...old.attributes]) {
    if (!fresh.hasAttribute(name) && !KEEP.has(name)) old.removeAttribute(name);
  }
  for (const { name, value } of [...fresh.attributes]) {
    if (!KEEP.has(name) && old.getAttribute(name) !== value) old.setAttribute(name, value);
  }
  adoptHandlers(old, fresh);
  update(old, ...fresh.childNodes);
  return old;
}

// Make `parent`'s children look like `fresh` (nodes built for this refresh), keeping the
// nodes it already has wherever they match.
export function update(parent, ...fresh) {
  const wanted = fresh.flat().filter((n) => n !== null && n !== undefined && n !== false)
    .map((n) => (n instanceof Node ? n : document.createTextNode(String(n))));
  const olds = [...parent.childNodes];
  const byKey = new Map();
  const unkeyed = [];
  for (const node of olds) {
    if (node.__key !== undefined) byKey.set(node.__key, node);
    else unkeyed.push(node);
  }
  let next = 0;
  const result = wanted.map((node) => {
    let match;
    if (node.__key !== undefined) {
      match = byKey.get(node.__key);
      byKey.delete(node.__key);
    } else {
      match = unkeyed[next++];
    }
    return match ? morph(match, node) : node;
  });
  result.forEach((node, i) => {
    const here = parent.childNodes[i];
    if (here !== node) parent.insertBefore(node, here || null);
  });
  while (parent.childNodes.length > result.length) parent.lastChild.remove();
}
