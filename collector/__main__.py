from driftline.collector import main

main()
