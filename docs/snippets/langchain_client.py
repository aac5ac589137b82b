"""Use aiforge from LangChain (README, "Use aiforge from LangChain, LangChain.js and LlamaIndex").

Start a server with a chat model and an embedder (both packaged: this works offline):
    aiforge serve chat=text-generation e5=sentence-embeddings:multilingual-e5-small
then, with `pip install langchain-openai`:
    python langchain_client.py
tests/serve/test_langchain.py runs this exact file against a test server.
"""

import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

base_url = os.environ.get("AIFORGE_URL", "http://127.0.0.1:8000/v1")
api_key = os.environ.get("AIFORGE_API_KEY", "none")  # the server's key, if it has one

chat = ChatOpenAI(base_url=base_url, api_key=api_key, model="chat", temperature=0, max_tokens=48)
# check_embedding_ctx_length=False: send the texts, not tiktoken ids of OpenAI's own models
embeddings = OpenAIEmbeddings(
    base_url=base_url, api_key=api_key, model="e5", check_embedding_ctx_length=False
)

texts = [
    "The warranty lasts two years.",
    "Refunds are paid within 14 days.",
    "The pump starts at 40 degrees.",
]
question = "How long does the warranty last?"

# retrieve: the text nearest to the question (e5's vectors are normalised: dot product = cosine)
vectors = embeddings.embed_documents(texts)
query = embeddings.embed_query(question)
nearest = max(range(len(texts)), key=lambda i: sum(a * b for a, b in zip(query, vectors[i], strict=True)))

# answer from it
prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in one short sentence using only the context."),
        ("human", "Context: {context}\n\nQuestion: {question}"),
    ]
)
chain = prompt | chat | StrOutputParser()
print(texts[nearest])
print(chain.invoke({"context": texts[nearest], "question": question}))
