// BrickCache holds decoded bricks up to a byte budget. Entries are kept in
// least-recently-used order (get and put make an entry the most recent);
// when a put would go over the budget, the least recently used entries that
// are not pinned are evicted first. Pinned entries (what is on screen) are
// never evicted; a put that cannot fit without evicting one is refused, so
// the cache never holds more than its budget. No DOM: unit-tested in node.

export interface CacheStats {
  budget: number;
  bytes: number; // bytes held now
  maxBytes: number; // the most ever held
  entries: number;
  pinned: number; // entries pinned now
  evictions: number;
  refused: number; // puts that could not fit
}

interface Entry<V> {
  value: V;
  bytes: number;
}

export class BrickCache<V> {
  // A Map iterates in insertion order: re-inserting makes an entry the most recent.
  private entries = new Map<string, Entry<V>>();
  private pins = new Set<string>();
  private held = 0;
  private most = 0;
  private evicted = 0;
  private refusedPuts = 0;
  /** onEvict, when set, is told of every entry evicted. */
  onEvict: ((id: string, value: V) => void) | null = null;

  constructor(private limit: number) {}

  get budget(): number {
    return this.limit;
  }

  /** setBudget changes the budget, evicting unpinned entries until the cache fits. */
  setBudget(bytes: number): void {
    this.limit = Math.max(0, bytes);
    this.evictFor(0);
  }

  get bytes(): number {
    return this.held;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** get returns an entry's value and makes it the most recently used. */
  get(id: string): V | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    this.entries.delete(id);
    this.entries.set(id, e);
    return e.value;
  }

  /** peek returns an entry's value without changing the order. */
  peek(id: string): V | undefined {
    return this.entries.get(id)?.value;
  }

  /**
   * put stores value (replacing any entry of id) as the most recently used
   * and reports whether it was kept: it is refused when, with every
   * unpinned entry evicted, it would still not fit.
   */
  put(id: string, value: V, bytes: number): boolean {
    const old = this.entries.get(id);
    if (old) {
      this.entries.delete(id);
      this.held -= old.bytes;
    }
    if (!this.evictFor(bytes)) {
      this.refusedPuts++;
      return false;
    }
    this.entries.set(id, { value, bytes });
    this.held += bytes;
    this.most = Math.max(this.most, this.held);
    return true;
  }

  /** delete drops an entry (pinned or not). */
  delete(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    this.held -= e.bytes;
  }

  /**
   * pin sets the entries that must not be evicted (ids not yet in the cache
   * count once they are put), replacing the previous set.
   */
  pin(ids: Iterable<string>): void {
    this.pins = new Set(ids);
  }

  isPinned(id: string): boolean {
    return this.pins.has(id);
  }

  /** evictFor evicts unpinned entries, least recently used first, until bytes more fit. */
  private evictFor(bytes: number): boolean {
    if (this.held + bytes <= this.limit) return true;
    let unpinned = 0;
    for (const [id, e] of this.entries) if (!this.pins.has(id)) unpinned += e.bytes;
    if (this.held - unpinned + bytes > this.limit) return false;
    for (const [id, e] of this.entries) {
      if (this.held + bytes <= this.limit) break;
      if (this.pins.has(id)) continue;
      this.entries.delete(id);
      this.held -= e.bytes;
      this.evicted++;
      this.onEvict?.(id, e.value);
    }
    return true;
  }

  /** keys returns the ids held, least recently used first. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  stats(): CacheStats {
    let pinned = 0;
    for (const id of this.entries.keys()) if (this.pins.has(id)) pinned++;
    return { budget: this.limit, bytes: this.held, maxBytes: this.most, entries: this.entries.size, pinned, evictions: this.evicted, refused: this.refusedPuts };
  }
}
