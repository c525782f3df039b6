"""ADF/XML leads, the feed dealer CRMs take (SPEC, "ADF/XML leads").

    lead.py        the ADF 1.0 document a completed session makes, validated
    adf-1.0.dtd    the ADF 1.0 DTD, written from the published standard
    sending.py     an `adf` target's attempt: the document e-mailed, or POSTed
"""
