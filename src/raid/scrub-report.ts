// What a scrub of an RStore found, added up row by row (RAID-5) or stripe unit by unit (RAID-0/1),
// for Pool.scrub and `lunfs scrub` to report.

/** What a scrub of rows found. */
export interface RowScrubReport {
  rows: number;
  /** Rows not checked because a member is out of service (nothing to compare with). */
  degradedRows: number;
  checksumRepairs: number;
  parityRepairs: number;
  unrepairable: number;
}

/** A report with nothing found yet, over `rows` rows checked. */
export function emptyScrubReport(rows = 0): RowScrubReport {
  return { rows, degradedRows: 0, checksumRepairs: 0, parityRepairs: 0, unrepairable: 0 };
}

/** Adds report's counts to total. */
export function addScrubReport(total: RowScrubReport, report: RowScrubReport): void {
  total.rows += report.rows;
  total.degradedRows += report.degradedRows;
  total.checksumRepairs += report.checksumRepairs;
  total.parityRepairs += report.parityRepairs;
  total.unrepairable += report.unrepairable;
}
