"""Use aiforge from LlamaIndex (README, "Use aiforge from LangChain, LangChain.js and LlamaIndex").

Start a server with a chat model and an embedder (both packaged: this works offline):
    aiforge serve chat=text-generation e5=sentence-embeddings:multilingual-e5-small
then, with `pip install llama-index-llms-openai-like llama-index-embeddings-openai-like`:
    python llamaindex_client.py
tests/serve/test_langchain.py runs this exact file against a test server.
"""

import os

from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from llama_index.llms.openai_like import OpenAILike

base_url = os.environ.get("AIFORGE_URL", "http://127.0.0.1:8000/v1")
api_key = os.environ.get("AIFORGE_API_KEY", "none")  # the server's key, if it has one

Settings.llm = OpenAILike(
    model="chat", api_base=base_url, api_key=api_key, is_chat_model=True, temperature=0, max_tokens=48
)
Settings.embed_model = OpenAILikeEmbedding(model_name="e5", api_base=base_url, api_key=api_key)
# LlamaIndex counts tokens with tiktoken, which downloads its tables: words are close enough here
Settings.tokenizer = str.split

texts = [
    "The warranty lasts two years.",
    "Refunds are paid within 14 days.",
    "The pump starts at 40 degrees.",
]
index = VectorStoreIndex([TextNode(text=t) for t in texts])
response = index.as_query_engine(similarity_top_k=1).query("How long does the warranty last?")
print(response.source_nodes[0].node.get_content())
print(response)
