/* ui.js: what the console's pages share. */

/* Query parameters for one page of a cursor-paged list: limit, and the cursor when given. */
export function pageQuery(limit, cursor) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (cursor) q.set('cursor', cursor);
  return q;
}

/* Reads one page of a cursor-paged list through get(cursor) into the signals of s: list (the
 * page replaces it, or with more is appended after s.cursor's page), cursor (the next one),
 * loading and error (the failure's message), and readAt (if given: when it was read). */
export async function loadPaged(s, get, more) {
  s.loading.value = true;
  s.error.value = null;
  try {
    const page = await get(more ? s.cursor.value : null);
    s.list.value = more ? [...s.list.value, ...page.items] : page.items;
    s.cursor.value = page.next_cursor || null;
    if (s.readAt) s.readAt.value = new Date().toISOString();
  } catch (e) {
    s.error.value = e.message;
  } finally {
    s.loading.value = false;
  }
}
