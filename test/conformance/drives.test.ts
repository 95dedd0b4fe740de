// The conformance suite against the two drives: the simulated MemoryDrive (power cut = crash()
// after flush) and the FileDrive on a sparse temporary file (power cycle = close and open again).
// Sizes are deliberately not multiples of 4 KiB or of the MemoryDrive's 64 KiB page.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDrive } from '../../src/drive/file-drive.js';
import { MemoryDrive } from '../../src/drive/memory-drive.js';
import { SeededRandom } from '../../src/util/clock.js';
import { KiB, MiB } from '../../src/util/sizes.js';
import { describeBlockDeviceConformance } from './block-device-conformance.js';

for (const sizeBytes of [2 * MiB + 1536, 64 * KiB * 5 + 512]) {
  describeBlockDeviceConformance(
    `MemoryDrive of ${sizeBytes} bytes`,
    async () => {
      const drive = new MemoryDrive('mem-conformance', sizeBytes);
      return {
        device: drive,
        powerCycle: async () => {
          drive.crash(new SeededRandom(sizeBytes));
          return drive;
        },
        close: () => drive.close(),
      };
    },
    {
      readsZerosWhenUnwritten: true,
      boundariesBytes: [512, 4096, 64 * KiB],
      survivesPowerCut: true,
    },
  );
}

describeBlockDeviceConformance(
  'FileDrive on a sparse temporary file',
  async () => {
    const directory = await mkdtemp(join(tmpdir(), 'lunfs-conformance-'));
    const path = join(directory, 'drive.img');
    let drive = await FileDrive.createSparse(path, MiB + 3 * 512);
    return {
      device: drive,
      powerCycle: async () => {
        await drive.close();
        drive = await FileDrive.open(path);
        return drive;
      },
      close: async () => {
        await drive.close();
        await rm(directory, { recursive: true, force: true });
      },
    };
  },
  { readsZerosWhenUnwritten: true, boundariesBytes: [512, 4096, 64 * KiB], survivesPowerCut: true },
);
