"""The device side: `bench worker` / `python -m harness.device`. numpy, psutil and one runtime; nothing else.

worker.py runs a Job (harness/jobs.py); lifeline.py makes sure a worker dies with the process that launched it;
main.py is the entry point both commands share.
"""
