"""The special token ids every tokenizer of the project reserves, defined once.

``PAD_ID`` 0 is padding everywhere (the models treat id 0 as padding; LLaMA's ``<unk>`` and
T5's ``<pad>`` are 0 too). The project's own tokenizers (byte, word, SentencePiece) also
put BOS at 1, EOS at 2 and UNK at 3, so ids from ``NUM_RESERVED`` on are ordinary tokens. A
Hugging Face tokenizer keeps its checkpoint's own BOS/EOS/UNK ids (``tokenizer.bos_id``,
...): code that must recognise those reads them from the tokenizer, not from here.
"""

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_RESERVED = 4  # ids 0..3 are special in the project's own tokenizers
