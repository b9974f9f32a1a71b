/**
 * The `.mana` backup format (protocol.md, "Backup"): a zip holding `events.jsonl` first (one change
 * per line, in commit order) and `manifest.json` last. Pure.
 */
import { MAX_SCHEMA_VERSION } from "../sync/change.ts";

export const EVENTS_ENTRY = "events.jsonl";
export const MANIFEST_ENTRY = "manifest.json";
export const FORMAT_VERSION = 1;
export const PRODUCED_BY = "mana-sync";
/** The change schema this server writes and reads. */
export const SCHEMA_VERSION = MAX_SCHEMA_VERSION;

export interface Manifest {
  formatVersion: number;
  schemaVersion: number;
  userId: string;
  /** When the export started (ISO-8601). */
  createdAt: string;
  eventCount: number;
  /** Hex SHA-256 of the uncompressed `events.jsonl`. */
  eventsSha256: string;
  /** The apps the events belong to, sorted, distinct. */
  apps: string[];
  producedBy: string;
  /** Absent when there are no events. */
  schemaVersionMin?: number;
  schemaVersionMax?: number;
}

/**
 * `mana-backup-{userId}-{YYYYMMDD-HHMMSS}.mana` (UTC). A user id is whatever the auth service puts
 * in `sub`: characters that do not belong in a file name or a header are replaced by `_`.
 */
export function backupFileName(userId: string, createdAt: Date): string {
  const stamp = createdAt.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
  return `mana-backup-${userId.replace(/[^A-Za-z0-9._-]/g, "_")}-${stamp}.mana`;
}
