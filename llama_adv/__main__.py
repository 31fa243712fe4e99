import sys

from llama_adv.cli import main

sys.exit(main())
