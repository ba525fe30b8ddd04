"""KServe custom predictors: one package per runtime (retriever, llm)."""
