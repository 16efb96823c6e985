// A sampler worker in its own process, so a test can SIGKILL it while it holds a managed vLLM
// server: argv[2] is an EnsureSamplerInput (JSON); prints the endpoint, then waits forever.
import { SamplerPool } from '../../activities/sampler-pool.ts';

const endpoint = await new SamplerPool().ensure(JSON.parse(process.argv[2]));
console.log(JSON.stringify(endpoint));
setInterval(() => {}, 1 << 30);
