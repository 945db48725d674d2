from driftline.collector.cli import main

main()
