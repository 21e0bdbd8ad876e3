from mllint.cli import console_main

console_main()
