# Reads every TensorBoard event directory under a logdir with the tensorboard package itself and
# prints {run: {tag: [[step, value], ...]}} as JSON, so tests check what TensorBoard would show.
import json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

logdir = sys.argv[1]
out = {}
for root, _dirs, files in os.walk(logdir):
    if not any('tfevents' in f for f in files):
        continue
    acc = EventAccumulator(root, size_guidance={'scalars': 0})
    acc.Reload()
    run = os.path.relpath(root, logdir)
    out[run] = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}
json.dump(out, sys.stdout)
