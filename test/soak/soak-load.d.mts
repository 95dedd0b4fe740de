// Types of soak-load.mjs, a plain ES module the load process runs with node.
export declare const blockBytes: number;
export declare const headerBytes: number;
export declare const blockMagic: Buffer;
export declare const liveFilesMax: number;
export declare const rawWriteBlocksMax: number;
export declare function generator(seed: number): () => number;
export declare function deriveSeed(...parts: Array<string | number>): number;
export declare function fileContent(
  seed: number,
  cycle: number,
  number: number,
  size: number,
): Buffer;
export declare function fileSize(seed: number, cycle: number, number: number): number;
export declare function rawBlock(
  seed: number,
  cycle: number,
  sequence: number,
  block: number,
): Buffer;
