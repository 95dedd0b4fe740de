// Entry point of ./bin/lunfs (after `npm run build`).
import { main } from './cli/main.js';

main(process.argv).then((code) => {
  process.exitCode = code;
});
