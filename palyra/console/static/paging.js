// A newest-first list paged back with "Older" by the cursor the API answers (next_before).
// The first page refreshes itself every `refreshMs` while no older page is shown. An "Older"
// load under way holds the refresh back: a refresh started meanwhile would make it stale, and
// the older page would never show. `load()` starts again from the newest (new filters).

import { update } from "./morph.js";

export function pagedList({ api, query, rowsOf, body, older, empty, state, what, refreshMs, onLeave }) {
  let nextBefore = null;
  let pages = 0;
  let generation = 0;
  let olderUnderWay = 0;  // the generation of an "Older" load not answered yet

  // more: append the page older than the last one shown; else start again from the newest.
  async function load(more = false) {
    const mine = ++generation;
    if (more) olderUnderWay = mine;
    try {
      const answer = await api("GET", query(more ? nextBefore : null));
      if (mine !== generation) return;  // the filters changed meanwhile
      olderUnderWay = 0;
      const rows = rowsOf(answer);
      if (more) body.append(...rows);
      else update(body, rows);
      pages = more ? pages + 1 : 1;
      nextBefore = answer.next_before || null;
      older.hidden = !nextBefore;
      empty.hidden = body.childElementCount > 0;
      state.textContent = `${body.childElementCount} shown, newest first` + (nextBefore ? "" : " (no older ones)")
        + `. Updated ${new Date().toLocaleTimeString()}.`;
    } catch (err) {
      if (mine !== generation) return;
      olderUnderWay = 0;
      state.textContent = `Could not load ${what}: ${err.message}`;
    }
  }

  older.addEventListener("click", () => load(true));
  const timer = setInterval(() => { if (pages <= 1 && olderUnderWay !== generation) load(); }, refreshMs);
  onLeave(() => { clearInterval(timer); generation++; });
  return load;
}
