// Types of snapshot-writer.mjs, a plain ES module the child process runs with node.
export declare const blockBytes: number;
export declare const headerBytes: number;
export declare const magic: Buffer;
export declare const journalRecordBytes: number;
export declare const issuedKind: number;
export declare const completedKind: number;
