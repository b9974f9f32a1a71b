/** A store page with its changes parsed from the wire JSON text the store returns. */
import type { Page } from "../../src/store/sync_store.ts";
import type { WireChange } from "../../src/sync/wire.ts";

export function parsedPage<P extends Page>(
  page: P,
): Omit<P, "serverChanges"> & { serverChanges: WireChange[] } {
  return { ...page, serverChanges: page.serverChanges.map((c) => JSON.parse(c) as WireChange) };
}
