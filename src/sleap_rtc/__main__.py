from sleap_rtc.cli import main

main()
