"""The on-demand check API (issue 5): pre-dispensing checks, real-time dispensing records,
findings review and rule precision, behind API Gateway (REST, IAM auth).

- `resolver`: the Powertools `APIGatewayRestResolver` app and its routes (`app`, `handle`)
- `models`: request and response models (pydantic); `nhsa`: the national 3101/3102 shapes
- `service`: the logic behind the routes (no HTTP, no boto3)
- `store`: `FindingsStore` (query and review of findings) and its in-memory implementation;
  `store_dynamo`: the DynamoDB one (the only boto3 user of this package)
- `access`: who may do what (caller identity -> institution), enforced in one place
- `errors`: domain errors and their HTTP answers, mapped in one place
- `serve`: `rxguard serve`, the API on localhost for curl and HIS integration tests
"""
